// The official openai client against a running `trit serve` (started by
// tests/serve/server_test.cpp): usage: node client_test.mjs BASE_URL API_KEY PROMPT
// Streams a chat, asks for it whole, asks for a completion, asks for logprobs (whole and
// streamed), penalties and a logit bias, and checks the client's typed errors; prints what it got as one JSON line for the C++ test to compare with the CLI.
import assert from "node:assert/strict";
import OpenAI from "openai";

const [baseURL, apiKey, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });

const models = await client.models.list();
const model = models.data[0].id;

const messages = [{ role: "user", content: "Who is Mr. Darcy?" }];
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 12, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let finish = null;
let usage = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    streamed += choice.delta?.content ?? "";
    if (choice.finish_reason) finish = choice.finish_reason;
  }
}
assert.equal(finish, "length");
assert.equal(usage.completion_tokens, 12);

const whole = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
assert.equal(whole.choices[0].message.content, streamed);
assert.equal(whole.usage.prompt_tokens, usage.prompt_tokens);

const completion = await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0 });
assert.equal(completion.choices[0].finish_reason, "length");

// logprobs, whole and streamed: the same entries, whose bytes are the reply.
const lpRequest = { model, messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 2 };
const lpWhole = await client.chat.completions.create(lpRequest);
const entries = lpWhole.choices[0].logprobs.content;
assert.equal(entries.length, 8);
assert.equal(entries[0].top_logprobs.length, 2);
assert.equal(Buffer.from(entries.flatMap((e) => e.bytes)).toString("utf8"),
             lpWhole.choices[0].message.content);
const lpStream = await client.chat.completions.create({ ...lpRequest, stream: true });
const streamedEntries = [];
for await (const chunk of lpStream) {
  for (const choice of chunk.choices) streamedEntries.push(...(choice.logprobs?.content ?? []));
}
assert.deepEqual(streamedEntries, entries);

// The penalties, a logit bias and a completion's logprobs through the client's typed fields.
const tuned = await client.completions.create({
  model, prompt, max_tokens: 8, temperature: 0, logprobs: 2, frequency_penalty: 0.5,
  presence_penalty: 0.25, logit_bias: { "300": -100 },
});
const lp = tuned.choices[0].logprobs;
assert.ok(lp.tokens.length > 0);
assert.equal(lp.token_logprobs.length, lp.tokens.length);
assert.equal(lp.text_offset.length, lp.tokens.length);
assert.equal(lp.tokens.join(""), tuned.choices[0].text);

await assert.rejects(
  client.chat.completions.create({ model, messages, temperature: 7 }),
  (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message));
await assert.rejects(
  new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list(),
  (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);

console.log(JSON.stringify({ model, chat: streamed, completion: completion.choices[0].text }));
