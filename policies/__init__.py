"""Pure decisions: no IO, no clock reads. Time comes in as arguments."""
