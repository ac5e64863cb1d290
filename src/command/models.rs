//! `runner models`: the models runner knows, with provider, prices and their source; the
//! configured endpoints; the default model.

use std::fmt::Write as _;
use std::path::Path;

use super::EXIT_PASSED;
use crate::report::render_table;
use crate::settings::{Flags, Settings};

pub(crate) fn models(config: Option<&Path>, prices: Option<&Path>) -> anyhow::Result<u8> {
    let settings = Settings::load(Flags { config, prices, ..Flags::default() })?;
    super::print(&render(&settings)?)?;
    Ok(EXIT_PASSED)
}

fn render(settings: &Settings) -> Result<String, std::fmt::Error> {
    let mut out = String::from("USD per million tokens\n\n");
    let price = |p: Option<f64>| p.map_or("-".into(), |c| format!("{c:.3}"));
    let rows: Vec<Vec<String>> = std::iter::once(
        ["model", "input", "cached", "cache write", "output", "date", "source"].map(String::from).to_vec(),
    )
    .chain(settings.prices.iter().map(|(key, entry)| {
        let p = &entry.price;
        vec![
            key.to_owned(),
            format!("{:.3}", p.input),
            price(p.cached_input),
            price(p.cache_write_input),
            format!("{:.3}", p.output),
            entry.date.clone().unwrap_or_else(|| "-".into()),
            entry.source.clone(),
        ]
    }))
    .collect();
    out.push_str(&render_table(&rows, &[0, 5, 6]));
    out.push_str("\nproviders (a key's value is never shown)\n\n");
    let rows: Vec<Vec<String>> = std::iter::once(["provider", "key", "address", "from"].map(String::from).to_vec())
        .chain(settings.providers.endpoints.iter().map(|(name, endpoint)| {
            let key = match (&endpoint.key_var, &endpoint.key) {
                (None, _) => "no key".to_owned(),
                (Some(var), Some(_)) => format!("{var} (set)"),
                (Some(var), None) => format!("{var} (not set)"),
            };
            // Credentials written into a base URL are secrets like a key.
            let address = if endpoint.base_url.is_empty() {
                format!("(set {})", endpoint.base_from)
            } else {
                settings.secrets.redact(&endpoint.base_url)
            };
            vec![name.clone(), key, address, endpoint.origin.to_owned()]
        }))
        .chain(std::iter::once(vec![
            "local".to_owned(),
            "no key".to_owned(),
            "in-process (local:smollm2-135m)".to_owned(),
            "built in".to_owned(),
        ]))
        .collect();
    out.push_str(&render_table(&rows, &[0, 1, 2, 3]));
    writeln!(out, "\ndefault model: {}", settings.default_model)?;
    Ok(out)
}
