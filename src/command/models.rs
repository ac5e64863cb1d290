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
    let rows: Vec<Vec<String>> = std::iter::once(["model", "input", "cached", "output", "date", "source"].map(String::from).to_vec())
        .chain(settings.prices.iter().map(|(key, entry)| {
            let p = &entry.price;
            vec![
                key.to_owned(),
                format!("{:.3}", p.input),
                p.cached_input.map_or("-".into(), |c| format!("{c:.3}")),
                format!("{:.3}", p.output),
                entry.date.clone().unwrap_or_else(|| "-".into()),
                entry.source.clone(),
            ]
        }))
        .collect();
    out.push_str(&render_table(&rows, &[0, 4, 5]));
    let endpoints = &settings.providers.endpoints;
    if !endpoints.is_empty() {
        out.push_str("\nendpoints (runner.yaml)\n");
        for (name, endpoint) in endpoints {
            let key = endpoint.key_var.as_deref().map_or("no key".to_owned(), |var| format!("key from {var}"));
            writeln!(out, "  {name}: {} ({key})", endpoint.base_url)?;
        }
    }
    writeln!(out, "\ndefault model: {}", settings.default_model)?;
    Ok(out)
}
