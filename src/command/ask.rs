//! `runner ask [PROMPT]`: one prompt (the argument, standard input, or both) and its answer.
//! Only the answer goes to standard output, streamed; usage and cost go to standard error.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::Context;

use super::UsageError;
use super::{EXIT_FAILED, EXIT_PASSED};
use crate::cli::AskArgs;
use crate::http::http_client;
use crate::progress::DownloadBar;
use crate::provider::{Models, TextSink};
use crate::settings::{Flags, Settings};

/// `runner ask`; with `-v` (`verbose` > 0) each tool call is shown on standard error.
pub(crate) async fn ask(config: Option<&Path>, args: AskArgs, verbose: u8) -> anyhow::Result<u8> {
    let prompt = read_prompt(args.prompt.as_deref())?;
    let settings = Settings::load(Flags { config, timeout_secs: args.timeout, ..Flags::default() })?;
    let tools = super::offered_tools(args.offer.tools.as_deref(), &settings.tools)?;
    let fetch = DownloadBar::new();
    let cache = settings.request_cache(args.offer.cache.cache.as_deref(), args.offer.cache.mode())?;
    let mut models = Models::new(&settings.providers, &settings.prices, http_client()?, &fetch).with_cache(cache);
    let target = models.resolve(args.model.as_deref().unwrap_or(&settings.default_model)).await?;
    let mut session = super::session(&settings, target, tools.as_deref(), models.http());
    let print = |text: &str| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    };
    let stream = !args.json && !args.offer.no_stream;
    let show_tools = verbose > 0 && !args.json;
    let turn = session
        .turn(&prompt, stream.then_some(&print as TextSink<'_>), show_tools.then_some(&super::show_tool_call))
        .await;
    if args.json {
        let record = session.record(turn.error.as_deref());
        super::print(&format!("{}\n", serde_json::to_string_pretty(&record)?))?;
    } else if let Some(reply) = &turn.reply {
        super::print(&if stream { "\n".to_owned() } else { format!("{reply}\n") })?;
    }
    if let Some(err) = &turn.error {
        eprintln!("error: {err}");
        return Ok(EXIT_FAILED);
    }
    if let Some(empty) = turn.empty_reply() {
        eprintln!("warning: {empty}");
    }
    if !args.quiet && !args.json {
        let target = &session.target;
        let cost = if target.price.is_some() { format!("${:.6}", turn.cost.total_usd) } else { "unpriced".to_owned() };
        let usage = &turn.usage;
        let (mark, note) = if turn.estimated() { ("~", ", estimated: the server reported no usage") } else { ("", "") };
        eprintln!(
            "{}: {mark}{} input + {mark}{} output = {mark}{} tokens{note}, {cost}",
            target.spec, usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
        );
    }
    Ok(EXIT_PASSED)
}

/// The argument, then (after a blank line) whatever is piped in.
fn read_prompt(argument: Option<&str>) -> anyhow::Result<String> {
    let mut prompt = argument.unwrap_or_default().to_owned();
    if !std::io::stdin().is_terminal() {
        let mut piped = String::new();
        std::io::stdin().read_to_string(&mut piped).context("cannot read standard input")?;
        if !piped.trim().is_empty() {
            if !prompt.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(piped.trim_end());
        }
    }
    if prompt.trim().is_empty() {
        return Err(UsageError(
            "nothing to ask: give a prompt (runner ask \"...\") or pipe one (echo hi | runner ask)".into(),
        )
        .into());
    }
    Ok(prompt)
}
