//! Choosing the codec by URL: `?codec=` and `?ce_source=` are longshore's, taken out before
//! the adapter sees the URL.

use super::{CloudEventsCodec, ContentMode};
use crate::error::Error;

/// The URL query parameter naming the codec: `json` (the default), `cloudevents` or
/// `cloudevents-binary` (binary mode), `cloudevents-structured`.
pub const CODEC_PARAM: &str = "codec";
/// The URL query parameter setting the CloudEvents `source` (percent-encoded).
pub const SOURCE_PARAM: &str = "ce_source";

/// Reads [`CODEC_PARAM`] and [`SOURCE_PARAM`] from `url`'s query and returns the URL without
/// them, and the CloudEvents codec asked for (`None`: the seed's JSON codec). The binding's
/// header names are the caller's to set ([`CloudEventsCodec::for_backend`]).
///
/// ```
/// use longshore_core::cloudevents::{codec_from_url, ContentMode};
/// let (url, codec) = codec_from_url("kafka://127.0.0.1:9092?codec=cloudevents&ce_source=%2Fbilling")?;
/// assert_eq!(url, "kafka://127.0.0.1:9092");
/// let codec = codec.expect("asked for");
/// assert_eq!((codec.mode(), codec.source()), (ContentMode::Binary, "/billing"));
/// # Ok::<(), longshore_core::Error>(())
/// ```
pub fn codec_from_url(url: &str) -> Result<(String, Option<CloudEventsCodec>), Error> {
    // The query starts at the first `?` after the user info, which may itself hold one.
    let after_authority = url
        .rfind('@')
        .map_or_else(|| url.find("://").map_or(0, |i| i + 3), |i| i + 1);
    let Some(q) = url[after_authority..]
        .find('?')
        .map(|q| q + after_authority)
    else {
        return Ok((url.to_string(), None));
    };
    let (base, query) = (&url[..q], &url[q + 1..]);
    let (query, fragment) = match query.find('#') {
        Some(h) => (&query[..h], &query[h..]),
        None => (query, ""),
    };
    let (mut codec, mut source) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            CODEC_PARAM => codec = Some(value.to_ascii_lowercase()),
            SOURCE_PARAM => source = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let mode = match codec.as_deref() {
        None | Some("json") => None,
        Some("cloudevents" | "cloudevents-binary") => Some(ContentMode::Binary),
        Some("cloudevents-structured") => Some(ContentMode::Structured),
        Some(other) => {
            return Err(Error::Config(format!(
                "unknown codec {other:?} in the URL: expected json, cloudevents, cloudevents-binary or cloudevents-structured"
            )))
        }
    };
    let codec = match (mode, source) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::Config(format!(
                "{SOURCE_PARAM} is a CloudEvents setting: add {CODEC_PARAM}=cloudevents"
            )))
        }
        (Some(mode), None) => Some(CloudEventsCodec::new(mode)),
        (Some(mode), Some(source)) => Some(
            CloudEventsCodec::new(mode)
                .with_source(source)
                .map_err(|e| Error::Config(format!("{SOURCE_PARAM}: {e}")))?,
        ),
    };
    let mut rest = base.to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    rest.push_str(fragment);
    Ok((rest, codec))
}

/// `%XX` escapes to bytes (a `+` stays a `+`: a source is a URI reference, not a form value).
fn percent_decode(value: &str) -> Result<String, Error> {
    let bad = || Error::Config(format!("{SOURCE_PARAM} is not valid percent-encoded UTF-8"));
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}
