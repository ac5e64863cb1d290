//! Generation: the KV-cache slots (a prompt's prefix is computed once), a text answer, a
//! forced call, and the choice between a call and text.

use serde_json::Value;

use super::LocalError;
use super::model::Model;
use super::prompt::{CALL_OPEN, facts, readable_result, turn_results};
use super::sampler::{self, Sampler};
use super::{COPY_NEXT_BIAS, COPY_START_BIAS, DEFAULT_MAX_TOKENS, Engine, KEEP_FROM, SLOT_BYTES, decide};
use crate::message::{Message, ToolSpec};
use crate::provider::Completion;
use crate::usage::Usage;

/// Longest cycle of tokens [`looping`] looks for.
const LOOP_PERIOD: usize = 8;
/// Times a cycle repeats before the text is cut.
const LOOP_REPEATS: usize = 4;

impl Engine {
    /// A cache to continue from: a copy of the slot whose prompt is the longest prefix of
    /// `prompt` (the copy shares its blocks), else a fresh one.
    pub(super) fn take_slot(&self, prompt: &[u32]) -> Model {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let best = slots
            .iter()
            .enumerate()
            .filter(|(_, m)| prompt.starts_with(m.cached()))
            .max_by_key(|(_, m)| m.cached().len())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let model = slots.remove(i);
                slots.push(model.clone());
                model
            }
            None => self.base.clone(),
        }
    }

    /// Keeps `model`'s state for later prompts that extend it; the least recently used
    /// slots go while their blocks take more than [`SLOT_BYTES`].
    pub(super) fn put_slot(&self, model: Model) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.retain(|m| m.cached() != model.cached());
        slots.push(model);
        while slots.len() > 1 && Model::unique_bytes(&slots) > SLOT_BYTES {
            slots.remove(0);
        }
    }

    pub(super) fn complete(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        forced: Option<&str>,
        sampling: &crate::provider::Sampling,
        stream: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, LocalError> {
        let before = Model::forwarded();
        let completion = self.answer(messages, tools, forced, sampling, stream)?;
        if let Some(usage) = &completion.usage {
            let forwarded = Model::forwarded() - before;
            tracing::debug!(
                forwarded,
                prompt = usage.prompt_tokens,
                cached = usage.cached_tokens,
                generated = usage.completion_tokens,
                "embedded model request"
            );
        }
        Ok(completion)
    }

    /// [`Engine::complete`] under the gate. `forced`: the tool the answer must call.
    pub(super) fn answer(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        forced: Option<&str>,
        sampling: &crate::provider::Sampling,
        stream: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, LocalError> {
        let max_tokens = sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS) as usize;
        let mut sampler = Sampler::new(sampling.temperature, sampling.top_p, sampling.seed.unwrap_or(0));
        // The cheap evidence step comes first: with no candidate tool, the long tool prompt
        // is never fed.
        let asked = match messages.last() {
            Some(Message::User { content }) => Some(content.as_str()),
            _ => None,
        };
        if let Some(name) = forced {
            return self.forced_call(messages, tools, name, asked.unwrap_or_default(), &mut sampler);
        }
        let candidates = asked.map(|asked| decide::candidates(asked, tools)).unwrap_or_default();
        if let Some(asked) = asked
            && !candidates.is_empty()
        {
            // Only the candidates are listed: a shorter prompt to feed, and no tool the
            // evidence step ruled out to distract a small model.
            let offered: Vec<ToolSpec> = candidates.iter().map(|&i| tools[i].clone()).collect();
            let all: Vec<usize> = (0..offered.len()).collect();
            let prompt = self.tokenizer.encode(&self.render(messages, &offered)?);
            let (mut model, reused) = self.prefilled(&prompt, 0)?;
            let decision = decide::choose(self, &mut model, messages, &offered, &all)?;
            if let Some((tool, opened)) = decision {
                let (calls, count) = self.write_calls(&mut model, &mut sampler, tool, &offered, asked)?;
                return Ok(Completion {
                    content: None,
                    tool_calls: calls,
                    finish_reason: Some("tool_calls".into()),
                    usage: Some(Usage {
                        cached_tokens: reused as u64,
                        ..Usage::new(prompt.len() as u64, opened + count)
                    }),
                    raw_usage: None,
                });
            }
        }
        let prompt = self.tokenizer.encode(&self.render_plain(messages)?);
        let (mut model, reused) = self.prefilled(&prompt, max_tokens)?;
        let logits = model.feed(&[])?;
        let mut generated = 0;
        let results = turn_results(messages);
        let copy = self.result_tokens(&results.iter().map(|r| readable_result(r)).collect::<Vec<_>>());
        let facts: Vec<String> = results.iter().flat_map(|r| facts(r)).collect();
        let mut completion =
            self.write_text(&mut model, logits, &mut sampler, max_tokens, &mut generated, (&copy, &facts), stream)?;
        completion.usage = Some(Usage { cached_tokens: reused as u64, ..Usage::new(prompt.len() as u64, generated) });
        Ok(completion)
    }

    /// One call to the tool named `name`, with no decision: only that tool is listed, the
    /// call is opened and its arguments written as any call's are (grounded in `asked`).
    pub(super) fn forced_call(
        &self,
        messages: &[Message],
        tools: &[ToolSpec],
        name: &str,
        asked: &str,
        sampler: &mut Sampler,
    ) -> Result<Completion, LocalError> {
        let tool = tools
            .iter()
            .find(|t| t.function.name == name)
            .ok_or_else(|| format!("the forced tool `{name}` is not among the offered tools"))?;
        let prompt = self.tokenizer.encode(&self.render(messages, std::slice::from_ref(tool))?);
        let (mut model, reused) = self.prefilled(&prompt, 0)?;
        let (_, opened) =
            self.force(&mut model, &format!("{CALL_OPEN}{{\"name\": {}", Value::String(name.to_owned())))?;
        let (call, written) = self.write_arguments(&mut model, sampler, &tool.function, asked)?;
        let (_, closed) = self.force(&mut model, "\n]</tool_call>")?;
        Ok(Completion {
            content: None,
            tool_calls: vec![call],
            finish_reason: Some("tool_calls".into()),
            usage: Some(Usage {
                cached_tokens: reused as u64,
                ..Usage::new(prompt.len() as u64, opened + written + closed)
            }),
            raw_usage: None,
        })
    }

    /// A model whose cache holds exactly `prompt`, from the best cached slot; the state is
    /// also kept in the pool for the next request that extends this prompt. Returns the
    /// number of prompt tokens served from the cache.
    pub(super) fn prefilled(&self, prompt: &[u32], max_tokens: usize) -> Result<(Model, usize), LocalError> {
        if prompt.len() + max_tokens > self.context_length {
            return Err(LocalError::Invalid(format!(
                "the conversation ({} tokens) and max_tokens ({max_tokens}) exceed the model's context of {} tokens",
                prompt.len(),
                self.context_length
            )));
        }
        let mut model = self.take_slot(prompt);
        // Keep the system message's state on its own too: every conversation with the same
        // system prompt and tools starts from it.
        let system_end = prompt.iter().position(|t| self.stop.first() == Some(t)).map_or(0, |at| at + 1);
        // Else a prefix an earlier process kept on disk: the whole prompt, or its system part.
        if let Some(prefixes) = &self.prefixes {
            let kept = [prompt.len(), system_end]
                .into_iter()
                .filter(|&end| end >= model.cached().len() + KEEP_FROM)
                .find_map(|end| prefixes.load(&self.base, &prompt[..end]));
            if let Some(kept) = kept {
                model = kept;
            }
        }
        // What came from the pool: the system prompt's own prefill reports it when it runs
        // (the rest then continues what this request just fed).
        let mut from_pool = None;
        if model.cached().len() < system_end && system_end < prompt.len() {
            let (_, reused) = model.prefill(&prompt[..system_end])?;
            from_pool = Some(reused);
            self.keep(&model, reused);
        }
        let (_, reused) = model.prefill(prompt)?;
        self.keep(&model, reused);
        Ok((model, from_pool.unwrap_or(reused)))
    }

    /// Keeps a freshly prefilled state in the pool, and on disk when `reused` tokens of it
    /// came from a cache and enough were fed to be worth a file.
    fn keep(&self, model: &Model, reused: usize) {
        self.put_slot(model.clone());
        if let Some(prefixes) = &self.prefixes
            && model.cached().len() >= reused + KEEP_FROM
        {
            prefixes.save(model);
        }
    }

    /// Token sequences of this turn's tool results (as [`readable_result`] shows them, with
    /// and without a leading space), which the answer is steered to copy.
    pub(super) fn result_tokens(&self, results: &[String]) -> Vec<Vec<u32>> {
        let mut sequences = Vec::new();
        for result in results {
            sequences.push(self.tokenizer.encode(result));
            sequences.push(self.tokenizer.encode(&format!(" {result}")));
        }
        sequences.retain(|s| !s.is_empty());
        sequences
    }

    /// Free text until the end-of-turn token or `max_tokens`, steered to copy `copy`: a
    /// result's first token gets [`COPY_START_BIAS`], and once the answer has written a
    /// result's first k tokens, its next one gets [`COPY_NEXT_BIAS`]. A model this small
    /// otherwise paraphrases results away ("elppa" becomes "el-ppa"). Once every result is
    /// stated, the steering stops and the answer ends with the sentence or line that stated
    /// the last one: what a
    /// model this small writes after that is rambling, and where it invents numbers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_text(
        &self,
        model: &mut Model,
        mut logits: Vec<f32>,
        sampler: &mut Sampler,
        max_tokens: usize,
        generated: &mut u64,
        (copy, facts): (&[Vec<u32>], &[String]),
        stream: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, LocalError> {
        let mut ids: Vec<u32> = Vec::new();
        let stated = |text: &str| {
            let text = text.to_lowercase();
            !facts.is_empty() && facts.iter().all(|f| text.contains(&f.to_lowercase()))
        };
        let mut finish = "length";
        // Text already sent to `stream`, as the final answer (trimmed) spells it.
        let mut sent = 0;
        // Every result stated: no more steering (a bias left on makes the model repeat them).
        let mut said = false;
        for _ in 0..max_tokens {
            for sequence in copy.iter().filter(|_| !said) {
                let mut bias = |id: u32, by: f32| {
                    if let Some(logit) = logits.get_mut(id as usize) {
                        *logit += by;
                    }
                };
                bias(sequence[0], COPY_START_BIAS);
                if let Some(k) = (1..sequence.len()).rev().find(|&k| ids.ends_with(&sequence[..k])) {
                    bias(sequence[k], COPY_NEXT_BIAS);
                }
            }
            let Some(next) = sampler.pick(&logits, None) else { break };
            *generated += 1;
            if self.stop.contains(&next) {
                finish = "stop";
                break;
            }
            ids.push(next);
            if let Some(cut) = looping(&ids) {
                ids.truncate(cut);
                finish = "stop";
                break;
            }
            // Whole characters only; a token may end inside one.
            let bytes = self.tokenizer.decode_bytes(&ids);
            let valid = match std::str::from_utf8(&bytes) {
                Ok(text) => text,
                Err(err) => std::str::from_utf8(&bytes[..err.valid_up_to()]).unwrap_or_default(),
            };
            said = stated(valid);
            let piece = if said { self.tokenizer.decode(&[next]) } else { String::new() };
            let done = said && (piece.contains('\n') || valid.trim_end().ends_with(['.', '!', '?']));
            if done && piece.trim().is_empty() {
                ids.pop();
            }
            if let Some(stream) = stream {
                let text = if done { self.tokenizer.decode(&ids) } else { valid.to_owned() };
                let text = text.trim_start();
                if text.trim_end().len() > sent {
                    let text = if done { text.trim_end() } else { text };
                    let _ = stream.send(text[sent..].to_owned());
                    sent = text.len();
                }
            }
            if done {
                finish = "stop";
                break;
            }
            logits = model.feed(&[next])?;
        }
        let text = self.tokenizer.decode(&ids).trim().to_owned();
        Ok(Completion {
            content: Some(text),
            tool_calls: vec![],
            finish_reason: Some(finish.into()),
            usage: None,
            raw_usage: None,
        })
    }

    /// Log probability of `text` following the state whose next-token logits are `logits`;
    /// feeds it into `model`.
    pub(super) fn log_prob(&self, model: &mut Model, mut logits: Vec<f32>, text: &str) -> Result<f64, LocalError> {
        let mut total = 0.0;
        for id in self.tokenizer.encode(text) {
            total += sampler::log_mass(&logits, &|t| t == id);
            logits = model.feed(&[id])?;
        }
        Ok(total)
    }

    /// Feeds fixed text; returns the logits after it and its token count.
    pub(super) fn force(&self, model: &mut Model, text: &str) -> Result<(Vec<f32>, u64), LocalError> {
        let ids = self.tokenizer.encode(text);
        Ok((model.feed(&ids)?, ids.len() as u64))
    }

    /// Picks one of `choices` (fixed texts) token by token, always staying on one of them,
    /// feeding what was picked. Returns the index of the choice.
    pub(super) fn choose_text(
        &self,
        model: &mut Model,
        mut logits: Vec<f32>,
        choices: &[String],
    ) -> Result<(usize, Vec<f32>, u64), LocalError> {
        let mut written = String::new();
        let mut count = 0;
        loop {
            if let Some(index) = choices.iter().position(|c| *c == written) {
                return Ok((index, logits, count));
            }
            let tokenizer = &self.tokenizer;
            let prefix = written.clone();
            let allowed = |id: u32| {
                let t = tokenizer.token_bytes(id);
                let Ok(t) = std::str::from_utf8(&t) else { return false };
                !t.is_empty() && choices.iter().any(|c| c.starts_with(&format!("{prefix}{t}")))
            };
            let Some(next) = sampler::best_allowed(&logits, &allowed) else {
                return Err(LocalError::Invalid(format!("no token continues any of {choices:?} after {written:?}")));
            };
            written.push_str(&String::from_utf8_lossy(&tokenizer.token_bytes(next)));
            logits = model.feed(&[next])?;
            count += 1;
        }
    }
}

/// Where to cut `ids` when they end in the same few tokens [`LOOP_REPEATS`] times over (a
/// greedy model this small can fall into "A:\nA:\nA:..." until `max_tokens`): after the
/// first of the repeats.
fn looping(ids: &[u32]) -> Option<usize> {
    (1..=LOOP_PERIOD).find_map(|period| {
        let span = period * LOOP_REPEATS;
        let tail = ids.get(ids.len().checked_sub(span)?..)?;
        let first = &tail[..period];
        tail.chunks_exact(period).all(|c| c == first).then(|| ids.len() - span + period)
    })
}

#[cfg(test)]
mod tests {
    use super::looping;

    #[test]
    fn a_text_that_repeats_itself_is_cut_after_the_first_round() {
        // "A:" "\n" four times over, after some text: cut after the first "A:\n".
        let ids = [5, 6, 7, 1, 2, 1, 2, 1, 2, 1, 2];
        assert_eq!(looping(&ids), Some(5));
        // One token repeated.
        assert_eq!(looping(&[9, 3, 3, 3, 3]), Some(2));
        // Three rounds are not yet a loop, nor is varied text.
        assert_eq!(looping(&[5, 1, 2, 1, 2, 1, 2]), None);
        assert_eq!(looping(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
    }
}
