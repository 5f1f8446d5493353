// Reads failsoft's flags through the official OpenFeature server SDK and its stock OFREP provider, and prints
// what the SDK resolved as one JSON line. Usage: node check.mjs http://127.0.0.1:PORT DEPENDENCY
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const baseUrl = process.argv[2];
await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl }));
const client = OpenFeature.getClient();
const pick = (d) => ({ value: d.value, variant: d.variant, reason: d.reason, errorCode: d.errorCode ?? null,
                       metadata: d.flagMetadata ?? {} });
const out = {
  'service-level': pick(await client.getStringDetails('service-level', 'fallback', { targetingKey: 'user-1' })),
  'capability.chat': pick(await client.getBooleanDetails('capability.chat', true)),
  'active-llm': pick(await client.getStringDetails('active-llm', 'fallback')),
  [`dependency.${process.argv[3]}`]: pick(await client.getStringDetails(`dependency.${process.argv[3]}`, 'fallback')),
  'no-such-flag': pick(await client.getStringDetails('no-such-flag', 'fallback')),
};
console.log(JSON.stringify(out));
await OpenFeature.close();
