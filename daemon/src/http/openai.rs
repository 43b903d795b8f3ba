//! The OpenAI chat-completions wire format: what a request may say and how
//! it becomes a [`Question`], and the bodies and chunks sent back.
//!
//! Unknown fields are ignored, as llama.cpp's server and vLLM do, so
//! clients written for OpenAI work unchanged; `tools` and
//! `response_format` are accepted and never acted on (Seer never answers
//! with a tool call). Values that are present but wrong are errors naming
//! the field.

use crate::protocol::{Code, ImageRef};
use crate::service::Question;
use seer_models::generate::{Sampling, StopReason, Timings};
use seer_models::tokenizer::Message;
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct ImageUrl {
    url: String,
}

/// A request error: HTTP status, OpenAI error type, message, parameter.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) kind: &'static str,
    pub(super) message: String,
    pub(super) param: Option<&'static str>,
    /// The JSON path of a value that did not parse (overrides `param`).
    pub(super) param_path: Option<String>,
    pub(super) code: Option<&'static str>,
}

impl ApiError {
    pub(super) fn bad(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param),
            param_path: None,
            code: None,
        }
    }

    /// The service's error as HTTP says it.
    pub(super) fn from_service(code: Code, message: String) -> Self {
        let (status, kind) = match code {
            Code::BadRequest | Code::Unsupported => (400, "invalid_request_error"),
            Code::TooLarge => (413, "invalid_request_error"),
            Code::PermissionDenied => (403, "permission_error"),
            Code::Busy => (429, "rate_limit_error"),
            Code::ModelMissing | Code::DeviceUnavailable => (503, "server_error"),
            Code::OffloadFailed => (502, "server_error"),
            _ => (500, "server_error"),
        };
        Self {
            status,
            kind,
            message,
            param: None,
            param_path: None,
            code: Some(code.as_str()),
        }
    }

    pub(super) fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param_path.as_deref().or(self.param),
            "code": self.code,
        }})
    }
}

/// What the handler needs besides the [`Question`].
pub(super) struct Parsed {
    pub(super) question: Question,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
}

impl ChatRequest {
    /// Checks the request and turns it into a question: the last message
    /// is the question (it must be the user's), the ones before it the
    /// conversation. Only the last message's image is looked at; earlier
    /// ones stay text (clients resend whole histories).
    pub(super) fn into_question(self) -> Result<Parsed, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad("n", "only n = 1 is supported"));
        }
        let Some((last, earlier)) = self.messages.split_last() else {
            return Err(ApiError::bad("messages", "messages must not be empty"));
        };
        if last.role != "user" {
            return Err(ApiError::bad(
                "messages",
                format!(
                    "the last message must be the user's question (its role is {:?})",
                    last.role
                ),
            ));
        }
        let mut history = Vec::with_capacity(earlier.len());
        for (i, m) in earlier.iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                // Tool results have nowhere to go: Seer never calls tools.
                "tool" | "function" => continue,
                other => {
                    return Err(ApiError::bad(
                        "messages",
                        format!("messages[{i}].role {other:?} is not system, user or assistant"),
                    ));
                }
            };
            let (text, _) = flatten(m.content.as_ref(), i)?;
            history.push(Message::new(role, text));
        }
        let (text, image) = flatten(last.content.as_ref(), earlier.len())?;
        if text.trim().is_empty() && image.is_none() {
            return Err(ApiError::bad("messages", "the last message has no text"));
        }
        let temperature = self.temperature.unwrap_or(0.0);
        if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
            return Err(ApiError::bad(
                "temperature",
                format!("temperature {temperature} must be between 0 and 2"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad(
                "top_p",
                format!("top_p {top_p} must be above 0 and at most 1"),
            ));
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1"));
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) if v.len() <= 4 => v,
            Some(Stop::Many(v)) => {
                return Err(ApiError::bad(
                    "stop",
                    format!("stop has {} strings; at most 4", v.len()),
                ));
            }
        };
        let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        let sampling = Sampling {
            temperature,
            top_p,
            seed: self.seed.unwrap_or(0),
            ..Sampling::default()
        };
        let mut question = Question::text(text);
        question.max_tokens = max_tokens;
        question.image = image;
        question.stream = self.stream;
        question.messages = Some(history);
        question.sampling = Some(sampling);
        question.stop = stop;
        Ok(Parsed {
            question,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// A message's text (parts joined by newlines) and its image, if any.
fn flatten(
    content: Option<&Content>,
    index: usize,
) -> Result<(String, Option<ImageRef>), ApiError> {
    match content {
        None => Ok((String::new(), None)),
        Some(Content::Text(t)) => Ok((t.clone(), None)),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            let mut image = None;
            for p in parts {
                match p {
                    Part::Text { text } => texts.push(text.as_str()),
                    Part::ImageUrl { image_url } => {
                        if image.is_some() {
                            return Err(ApiError::bad(
                                "messages",
                                format!(
                                    "messages[{index}] has more than one image; Seer looks at one per question"
                                ),
                            ));
                        }
                        image = Some(data_uri(&image_url.url, index)?);
                    }
                    Part::Other => {}
                }
            }
            Ok((texts.join("\n"), image))
        }
    }
}

/// The base64 payload of a `data:image/…;base64,` URI. Seer fetches
/// nothing from the network, so any other URL is refused.
fn data_uri(url: &str, index: usize) -> Result<ImageRef, ApiError> {
    let bad = |m: String| ApiError::bad("messages", format!("messages[{index}].image_url: {m}"));
    let Some(rest) = url.strip_prefix("data:") else {
        let shown: String = url.chars().take(40).collect();
        return Err(bad(format!(
            "{shown:?} is not a data: URI; Seer does not fetch images from the network (send data:image/jpeg;base64,…)"
        )));
    };
    let Some((meta, payload)) = rest.split_once(',') else {
        return Err(bad("a data: URI needs a comma before its payload".into()));
    };
    if !meta.ends_with(";base64") {
        return Err(bad(format!(
            "data:{meta} is not base64 (expected data:image/…;base64,…)"
        )));
    }
    Ok(ImageRef::Base64(payload.to_owned()))
}

/// `finish_reason` for a stop reason.
pub(super) fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

pub(super) fn usage(t: &Timings) -> Value {
    json!({
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.generated_tokens,
        "total_tokens": t.prompt_tokens + t.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": t.cached_tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Parsed, ApiError> {
        let r: ChatRequest = serde_json::from_value(v).expect("shape");
        r.into_question()
    }

    #[test]
    fn history_system_and_image_parts_become_a_question() {
        let p = parse(json!({
            "model": "whatever", "tools": [{"type": "function"}], "unknown": 1,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": null},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]}
            ],
            "max_tokens": 3, "stop": "\n", "temperature": 0.5, "seed": 9
        }))
        .map_err(|e| e.message)
        .expect("valid");
        let q = p.question;
        assert_eq!(q.text, "What is this?");
        assert_eq!(q.image, Some(ImageRef::Base64("AAAA".into())));
        assert_eq!(q.max_tokens, Some(3));
        assert_eq!(q.stop, vec!["\n".to_owned()]);
        let m = q.messages.expect("history");
        assert_eq!(m[0], Message::new("system", "Be brief."));
        assert_eq!(m.len(), 3);
        let s = q.sampling.expect("sampling");
        assert_eq!((s.temperature, s.seed), (0.5, 9));
    }

    #[test]
    fn wrong_values_name_their_field() {
        let e = parse(json!({"messages": []})).err().expect("empty");
        assert_eq!(e.param, Some("messages"));
        let e = parse(json!({"messages": [{"role": "user", "content": "x"}], "temperature": 9}))
            .err()
            .expect("hot");
        assert_eq!((e.status, e.param), (400, Some("temperature")));
        let e = parse(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}}]}]}))
        .err()
        .expect("remote url");
        assert!(e.message.contains("network"), "{}", e.message);
        let e = parse(json!({"messages": [{"role": "assistant", "content": "x"}]}))
            .err()
            .expect("not the user's");
        assert!(e.message.contains("user"), "{}", e.message);
    }
}
