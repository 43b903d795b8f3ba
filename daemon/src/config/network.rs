//! `[offload]` and `[http]`: the two sections that reach beyond the local
//! socket, and the secrets they hold.
//!
//! Keys are [`Secret`]s: never written by `--print-config` and never shown
//! by `Debug` (so a `tracing` line of the config cannot leak them). A key
//! in a file (`api_key_file`) is read once at start-up; its errors name the
//! key and the file.

use super::{ConfigError, non_empty, shown};
use seer_pipelines::offload::{OffloadConfig, OffloadMode, OffloadTurns};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A key from the config. `Debug` prints `(hidden)`; `--print-config`
/// leaves it out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(hidden)")
    }
}

impl Secret {
    /// The key itself, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `[offload] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Never offload (the default).
    #[default]
    Off,
    /// Remote first, local when the remote fails before its first word.
    Prefer,
    /// Remote only.
    Only,
}

/// `[offload] turns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Turns {
    /// Text questions only (photos stay on the device).
    Text,
    /// Questions with a photo only.
    Images,
    /// Both (the default).
    #[default]
    Both,
}

/// `[offload]`: answering on an OpenAI-compatible server (llama.cpp's
/// server, ollama, vLLM) on a bigger machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffloadSection {
    /// `off`, `prefer` or `only`.
    pub mode: Mode,
    /// Base URL ending in `/v1`, e.g. `http://192.168.1.20:8080/v1`.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub url: Option<String>,
    /// Bearer key the server wants.
    #[serde(deserialize_with = "non_empty", skip_serializing)]
    pub api_key: Option<Secret>,
    /// A file holding the key (first line), instead of `api_key`.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key_file: Option<PathBuf>,
    /// The `model` sent; servers with one model ignore it.
    pub model: String,
    /// Which turns go remote: `text`, `images` or `both`.
    pub turns: Turns,
    /// Seconds to connect.
    pub connect_timeout_s: f64,
    /// Seconds from the request to the first answer text (includes the
    /// server's prompt processing).
    pub first_token_timeout_s: f64,
    /// Seconds allowed between two pieces of a streamed answer.
    pub gap_timeout_s: f64,
    /// Failures in a row after which turns stay local (the breaker opens)
    /// until a probe of `GET {url}/models` succeeds.
    pub breaker_failures: u32,
    /// Seconds between probes while the breaker is open.
    pub probe_interval_s: f64,
}

impl Default for OffloadSection {
    fn default() -> Self {
        Self {
            mode: Mode::Off,
            url: None,
            api_key: None,
            api_key_file: None,
            model: "default".into(),
            turns: Turns::Both,
            connect_timeout_s: 3.0,
            first_token_timeout_s: 30.0,
            gap_timeout_s: 15.0,
            breaker_failures: 2,
            probe_interval_s: 5.0,
        }
    }
}

/// `[http]`: Seer's OpenAI-compatible API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Serve it (off by default).
    pub enabled: bool,
    /// Address and port; loopback by default. Any other address needs a key.
    pub listen: String,
    /// Bearer key clients must send.
    #[serde(deserialize_with = "non_empty", skip_serializing)]
    pub api_key: Option<Secret>,
    /// A file holding the key (first line), instead of `api_key`.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_key_file: Option<PathBuf>,
    /// Browser origins (`https://example.org`) allowed to call the API; a
    /// request with any other `Origin` header is refused.
    pub allowed_origins: Vec<String>,
    /// Largest request body in bytes (a photo travels base64 inside it).
    pub max_body_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8931".into(),
            api_key: None,
            api_key_file: None,
            allowed_origins: Vec::new(),
            max_body_bytes: 32 << 20,
        }
    }
}

/// `[http]` after its checks.
#[derive(Debug, Clone)]
pub struct HttpResolved {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The key clients must send, if any.
    pub api_key: Option<Secret>,
    /// Allowed browser origins.
    pub allowed_origins: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// `api_key`, or the first line of `api_key_file`.
fn key(
    section: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "{section}.api_key and {section}.api_key_file are both set; keep one"
        )),
        (Some(k), None) => Ok(Some(k.clone())),
        (None, None) => Ok(None),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| {
                format!(
                    "{section}.api_key_file = {}: cannot read it: {e}",
                    f.display()
                )
            })?;
            let k = text.lines().next().unwrap_or("").trim();
            if k.is_empty() {
                return Err(format!(
                    "{section}.api_key_file = {}: the file is empty",
                    f.display()
                ));
            }
            Ok(Some(Secret(k.to_owned())))
        }
    }
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v <= 3600.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{name} = {v} must be above 0 and at most 3600"))
    }
}

impl OffloadSection {
    /// The remote backend's settings (`None`: offload is off), with the
    /// key read. Errors name the key that is wrong.
    pub fn resolve(&self, path: Option<&Path>) -> Result<Option<OffloadConfig>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: shown(path),
            message,
        };
        let mode = match self.mode {
            Mode::Off => return Ok(None),
            Mode::Prefer => OffloadMode::Prefer,
            Mode::Only => OffloadMode::Only,
        };
        let Some(url) = &self.url else {
            return Err(invalid(
                "offload.mode is on but offload.url is not set (e.g. \"http://192.168.1.20:8080/v1\")"
                    .into(),
            ));
        };
        check_url(url).map_err(|why| invalid(format!("offload.url = {url:?}: {why}")))?;
        let api_key = key(
            "offload",
            self.api_key.as_ref(),
            self.api_key_file.as_deref(),
        )
        .map_err(invalid)?;
        Ok(Some(OffloadConfig {
            url: url.trim_end_matches('/').to_owned(),
            api_key: api_key.map(|k| k.0),
            model: self.model.clone(),
            mode,
            turns: match self.turns {
                Turns::Text => OffloadTurns::Text,
                Turns::Images => OffloadTurns::Images,
                Turns::Both => OffloadTurns::Both,
            },
            connect_timeout: seconds("offload.connect_timeout_s", self.connect_timeout_s)
                .map_err(invalid)?,
            first_token_timeout: seconds(
                "offload.first_token_timeout_s",
                self.first_token_timeout_s,
            )
            .map_err(invalid)?,
            gap_timeout: seconds("offload.gap_timeout_s", self.gap_timeout_s).map_err(invalid)?,
            breaker_failures: self.breaker_failures.max(1),
            probe_interval: seconds("offload.probe_interval_s", self.probe_interval_s)
                .map_err(invalid)?,
        }))
    }
}

/// An `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected e.g. \"http://192.168.1.20:8080/v1\""))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other:?} is not http or https")),
        None => return Err("no scheme; expected http://HOST:PORT/v1".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if uri.query().is_some() {
        return Err("a base URL has no query string".into());
    }
    Ok(())
}

impl HttpSection {
    /// The server's settings (`None`: off). Binding beyond loopback
    /// without a key is refused, naming the key to set.
    pub fn resolve(&self, path: Option<&Path>) -> Result<Option<HttpResolved>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: shown(path),
            message,
        };
        if !self.enabled {
            return Ok(None);
        }
        let listen: SocketAddr = self.listen.parse().map_err(|e| {
            invalid(format!(
                "http.listen = {:?}: {e} (expected ADDRESS:PORT, e.g. \"127.0.0.1:8931\")",
                self.listen
            ))
        })?;
        let api_key =
            key("http", self.api_key.as_ref(), self.api_key_file.as_deref()).map_err(invalid)?;
        if !listen.ip().is_loopback() && api_key.is_none() {
            return Err(invalid(format!(
                "http.listen = {:?} is reachable from other machines: set http.api_key (or http.api_key_file) so only clients with the key are served",
                self.listen
            )));
        }
        if !(1024..=(1 << 30)).contains(&self.max_body_bytes) {
            return Err(invalid(format!(
                "http.max_body_bytes = {} must be between 1024 and 1073741824",
                self.max_body_bytes
            )));
        }
        for o in &self.allowed_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(invalid(format!(
                    "http.allowed_origins: {o:?} is not an origin (scheme://host[:port], no path)"
                )));
            }
        }
        Ok(Some(HttpResolved {
            listen,
            api_key,
            allowed_origins: self.allowed_origins.clone(),
            max_body_bytes: self.max_body_bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("c.toml")).expect("parses")
    }

    #[test]
    fn a_public_bind_without_a_key_is_refused_naming_the_key() {
        let c = parse("[http]\nenabled = true\nlisten = \"0.0.0.0:8931\"\n");
        let e = c.http.resolve(None).expect_err("refused").to_string();
        assert!(e.contains("http.api_key"), "{e}");
        let c = parse("[http]\nenabled = true\nlisten = \"0.0.0.0:8931\"\napi_key = \"k\"\n");
        assert!(c.http.resolve(None).expect("with a key").is_some());
        let c = parse("[http]\nenabled = true\n");
        let r = c.http.resolve(None).expect("loopback").expect("on");
        assert!(r.listen.ip().is_loopback());
        let c = parse("[http]\nenabled = true\nlisten = \"localhost\"\n");
        let e = c.http.resolve(None).expect_err("no port").to_string();
        assert!(e.contains("http.listen"), "{e}");
    }

    #[test]
    fn a_bad_offload_url_names_the_key() {
        for url in [
            "ftp://host/v1",
            "not a url",
            "http:///v1",
            "192.168.1.2:8080",
        ] {
            let c = parse(&format!("[offload]\nmode = \"prefer\"\nurl = \"{url}\"\n"));
            let e = c.offload.resolve(None).expect_err(url).to_string();
            assert!(e.contains("offload.url"), "{url}: {e}");
        }
        let c = parse("[offload]\nmode = \"only\"\n");
        let e = c.offload.resolve(None).expect_err("no url").to_string();
        assert!(e.contains("offload.url"), "{e}");
        let c = parse("[offload]\nurl = \"http://h:1/v1\"\n");
        assert!(c.offload.resolve(None).expect("off").is_none());
    }

    #[test]
    fn keys_never_print() {
        let c = parse(
            "[offload]\nmode = \"prefer\"\nurl = \"http://h:1/v1\"\napi_key = \"sekrit-1\"\n[http]\napi_key = \"sekrit-2\"\n",
        );
        let printed = toml::to_string_pretty(&c).expect("toml");
        assert!(!printed.contains("sekrit"), "{printed}");
        let debug = format!("{c:?}");
        assert!(!debug.contains("sekrit"), "{debug}");
        let r = c.offload.resolve(None).expect("ok").expect("on");
        assert!(!format!("{r:?}").contains("sekrit"));
        assert_eq!(r.api_key.as_deref(), Some("sekrit-1"));
    }

    #[test]
    fn a_key_file_is_read_and_its_problems_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("key");
        std::fs::write(&f, "from-file\n").expect("write");
        let c = parse(&format!(
            "[http]\nenabled = true\napi_key_file = \"{}\"\n",
            f.display()
        ));
        let r = c.http.resolve(None).expect("ok").expect("on");
        assert_eq!(r.api_key.as_ref().map(|k| k.expose()), Some("from-file"));
        let c = parse("[http]\nenabled = true\napi_key_file = \"/nonexistent/key\"\n");
        let e = c.http.resolve(None).expect_err("missing").to_string();
        assert!(
            e.contains("http.api_key_file") && e.contains("/nonexistent/key"),
            "{e}"
        );
    }
}
