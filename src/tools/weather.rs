//! `get_weather`: current weather from Open-Meteo's keyless geocoding and forecast APIs.
//! When the service cannot be reached the tool returns an error, never invented weather.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::builtin::Builtin;
use super::{ToolContext, ToolError, parse_arguments};

/// Where `get_weather` asks. Both are configurable so tests can point them at 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeatherConfig {
    /// Base URL of the geocoding API (`{base}/v1/search`).
    pub geocoding_url: String,
    /// Base URL of the forecast API (`{base}/v1/forecast`).
    pub forecast_url: String,
    pub timeout: Duration,
}

impl Default for WeatherConfig {
    fn default() -> Self {
        Self {
            geocoding_url: "https://geocoding-api.open-meteo.com".to_owned(),
            forecast_url: "https://api.open-meteo.com".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

pub(super) struct GetWeather;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeatherArgs {
    city: String,
}

#[derive(Deserialize)]
struct GeocodingResponse {
    #[serde(default)]
    results: Vec<Place>,
}

#[derive(Deserialize)]
struct Place {
    name: String,
    latitude: f64,
    longitude: f64,
    #[serde(default)]
    country: Option<String>,
}

#[derive(Deserialize)]
struct ForecastResponse {
    current: Current,
}

#[derive(Deserialize)]
struct Current {
    time: String,
    temperature_2m: f64,
    #[serde(default)]
    relative_humidity_2m: Option<f64>,
    #[serde(default)]
    wind_speed_10m: Option<f64>,
    weather_code: u32,
}

impl Builtin for GetWeather {
    fn name(&self) -> &'static str {
        "get_weather"
    }
    fn description(&self) -> &'static str {
        "Get the current weather for a city: temperature in Celsius (how warm or cold), conditions (rain, snow, sun, clouds), humidity and wind."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. Paris."}},
            "required": ["city"],
            "additionalProperties": false
        })
    }
    fn call<'a>(&'a self, arguments: Value, context: &'a ToolContext) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let WeatherArgs { city } = parse_arguments(arguments)?;
            let city = city.trim();
            if city.is_empty() {
                return Err(ToolError::BadArguments("city is empty".to_owned()));
            }
            let config = &context.weather;
            let geocoding: GeocodingResponse = fetch_json(
                context,
                &format!("{}/v1/search", config.geocoding_url.trim_end_matches('/')),
                &[
                    ("name", city.to_owned()),
                    ("count", "1".to_owned()),
                    ("language", "en".to_owned()),
                    ("format", "json".to_owned()),
                ],
            )
            .await?;
            let Some(place) = geocoding.results.into_iter().next() else {
                return Err(ToolError::Failed(format!("no place named `{city}` found")));
            };
            let forecast: ForecastResponse = fetch_json(
                context,
                &format!("{}/v1/forecast", config.forecast_url.trim_end_matches('/')),
                &[
                    ("latitude", place.latitude.to_string()),
                    ("longitude", place.longitude.to_string()),
                    ("current", "temperature_2m,relative_humidity_2m,weather_code,wind_speed_10m".to_owned()),
                ],
            )
            .await?;
            let current = forecast.current;
            Ok(json!({
                "city": place.name,
                "country": place.country,
                "temperature_c": current.temperature_2m,
                "conditions": conditions(current.weather_code),
                "humidity_pct": current.relative_humidity_2m,
                "wind_speed_kmh": current.wind_speed_10m,
                "observed_at": current.time,
            }))
        })
    }
}

async fn fetch_json<T: for<'de> Deserialize<'de>>(
    context: &ToolContext,
    url: &str,
    query: &[(&str, String)],
) -> Result<T, ToolError> {
    let unavailable = |err: &dyn std::fmt::Display| ToolError::Failed(format!("weather service unavailable: {err}"));
    let timeout = context.weather.timeout;
    // A time-out says so (reqwest reports one met while reading the body as a decoding error).
    let failed = |err: reqwest::Error| {
        if err.is_timeout() {
            unavailable(&format!("no answer from {url} within {timeout:?}"))
        } else {
            unavailable(&crate::http::error_chain(&err))
        }
    };
    let response = context.http.get(url).query(query).timeout(timeout).send().await.map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(unavailable(&format!("HTTP {status} from {url}")));
    }
    let bytes = response.bytes().await.map_err(failed)?;
    serde_json::from_slice(&bytes).map_err(|err| unavailable(&format!("unexpected response from {url}: {err}")))
}

/// WMO weather interpretation code -> words.
fn conditions(code: u32) -> &'static str {
    match code {
        0 => "clear sky",
        1 => "mainly clear",
        2 => "partly cloudy",
        3 => "overcast",
        45 | 48 => "fog",
        51 | 53 | 55 => "drizzle",
        56 | 57 => "freezing drizzle",
        61 | 63 | 65 => "rain",
        66 | 67 => "freezing rain",
        71 | 73 | 75 | 77 => "snow",
        80..=82 => "rain showers",
        85 | 86 => "snow showers",
        95 => "thunderstorm",
        96 | 99 => "thunderstorm with hail",
        _ => "unknown",
    }
}
