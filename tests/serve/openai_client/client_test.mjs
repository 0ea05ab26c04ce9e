// The official openai client against a running `trit serve` (started by
// tests/serve/server_test.cpp): usage: node client_test.mjs BASE_URL API_KEY PROMPT
// Streams a chat, asks for it whole, asks for a completion, and checks the client's typed
// errors; prints what it got as one JSON line for the C++ test to compare with the CLI.
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

await assert.rejects(
  client.chat.completions.create({ model, messages, temperature: 7 }),
  (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message));
await assert.rejects(
  new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list(),
  (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);

console.log(JSON.stringify({ model, chat: streamed, completion: completion.choices[0].text }));
