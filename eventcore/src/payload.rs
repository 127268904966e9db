//! Event payloads, kept as the JSON text that is stored.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

/// The deepest nesting of arrays and objects an event's payload (or a
/// metadata value, counted from the stored metadata object) may have.
pub const MAX_JSON_DEPTH: usize = 64;

/// An event's payload: JSON text, shared.
///
/// Kept as text, not as a `serde_json::Value` tree: encoding a domain event
/// is one serialization, a copy of an event shares the text, and a store
/// holds one allocation per payload. [`NewEvent`](crate::NewEvent) makes
/// payloads from domain events (compact JSON) and checks that every store
/// can keep them; readers decode them with
/// [`RecordedEvent::decode`](crate::RecordedEvent::decode) or
/// [`Payload::decode`].
///
/// Equality compares the text. A store may hand back the same JSON laid out
/// differently (PostgreSQL's `jsonb` adds spaces and orders object keys), so
/// compare decoded values, not payloads, across stores.
///
/// ```
/// use eventcore::{Event, EventMetadata, NewEvent};
/// # #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// # struct Pinged { n: u32 }
/// # impl Event for Pinged { fn event_type(&self) -> &'static str { "Pinged" } }
/// let event = NewEvent::from_event(&Pinged { n: 1 }, EventMetadata::default())?;
/// assert_eq!(event.payload().as_json(), r#"{"n":1}"#);
/// assert_eq!(event.payload().to_value()?["n"], 1);
/// assert_eq!(event.payload().decode::<Pinged>()?, Pinged { n: 1 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<str>);

thread_local! {
    /// Where each thread serializes payloads before they are copied into
    /// their shared text: one allocation per payload instead of a growing
    /// `String` (three or four reallocations for a small event) and its copy.
    static ENCODE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most an encode buffer keeps between payloads, so that one huge
/// payload does not pin its size on the thread.
const MAX_KEPT_ENCODE_BUFFER: usize = 64 * 1024;

/// Why a value cannot be stored as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonProblem {
    /// A string or key holds U+0000.
    Nul,
    /// Arrays and objects nest deeper than [`MAX_JSON_DEPTH`].
    TooDeep,
    /// A float is NaN or infinite, which JSON would write as `null`.
    NonFinite,
}

impl Payload {
    /// Serializes `value` to compact JSON and checks it can be stored as
    /// it is: no NUL, no nesting past [`MAX_JSON_DEPTH`], no float written
    /// as `null` because it is NaN or infinite.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        value: &T,
    ) -> Result<Result<Self, JsonProblem>, serde_json::Error> {
        ENCODE_BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => Self::encode_into(value, &mut buffer),
            // A `Serialize` impl that itself encodes a payload: a buffer of its own.
            Err(_) => Self::encode_into(value, &mut Vec::new()),
        })
    }

    /// [`encode`](Self::encode) through `buffer`, which is left empty.
    fn encode_into<T: Serialize + ?Sized>(
        value: &T,
        buffer: &mut Vec<u8>,
    ) -> Result<Result<Self, JsonProblem>, serde_json::Error> {
        buffer.clear();
        // The checks ride along the serialization instead of a second pass
        // over the text; a refused value stops it where it is refused.
        let mut checks = Checks::default();
        let written = value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut *buffer,
            CheckingFormatter(&mut checks),
        ));
        let encoded = match (checks.problem, written) {
            (Some(problem), _) => Ok(Err(problem)),
            (None, Err(error)) => Err(error),
            (None, Ok(())) if checks.nulls && crate::finite::has_non_finite(value) => {
                Ok(Err(JsonProblem::NonFinite))
            }
            // serde_json writes UTF-8 only; the check cannot fail.
            (None, Ok(())) => std::str::from_utf8(buffer)
                .map(|text| Ok(Self(Arc::from(text))))
                .map_err(serde::ser::Error::custom),
        };
        buffer.clear();
        if buffer.capacity() > MAX_KEPT_ENCODE_BUFFER {
            buffer.shrink_to(MAX_KEPT_ENCODE_BUFFER);
        }
        encoded
    }

    /// The payload of text a store wrote from a `Payload` and reads back.
    ///
    /// For store adapters: the text is not checked again. Text that is not
    /// JSON fails when it is decoded, with an error naming the event.
    pub fn from_stored(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// Decodes the payload into `T`.
    ///
    /// # Errors
    /// serde_json's error when the text does not fit `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// The payload as a `serde_json::Value`, for code that inspects events
    /// without knowing their type.
    ///
    /// # Errors
    /// serde_json's error if the stored text is not JSON.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        self.decode()
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload").field(&&*self.0).finish()
    }
}

/// Serialized as the JSON value it holds (not as a string), with any serializer.
impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::encode(&value)
            .map_err(serde::de::Error::custom)?
            .map_err(|problem| {
                serde::de::Error::custom(match problem {
                    JsonProblem::Nul => "a payload string holds U+0000",
                    JsonProblem::TooDeep => "a payload nests JSON too deep",
                    JsonProblem::NonFinite => "a payload holds a NaN or infinite number",
                })
            })
    }
}

/// Checks every string, key and nesting level of `value`, which sits at
/// `depth` (1 for a top-level value). Iterative, so that a deeply nested
/// value cannot overflow the stack.
pub(crate) fn check_json(value: &serde_json::Value, depth: usize) -> Result<(), JsonProblem> {
    use serde_json::Value;
    let mut pending = vec![(value, depth)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return Err(JsonProblem::Nul),
            Value::Array(_) | Value::Object(_) if depth > MAX_JSON_DEPTH => {
                return Err(JsonProblem::TooDeep);
            }
            Value::Array(items) => pending.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return Err(JsonProblem::Nul);
                }
                pending.extend(map.values().map(|item| (item, depth + 1)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether JSON text holds a `null`: the only trace a NaN or infinite
/// float leaves once serde_json has written it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nulls {
    None,
    Some,
}

/// The same checks as [`check_json`] on JSON text serde_json wrote, found
/// at `depth` (0 for a whole payload): one pass over the bytes, tracking
/// strings and escapes, counting nesting outside strings. serde_json writes U+0000 as the escape `\u0000`. Also tells
/// whether a `null` appears (outside strings, only `null` starts with `n`).
fn check_json_text(text: &str, depth: usize) -> Result<Nulls, JsonProblem> {
    let bytes = text.as_bytes();
    let mut depth = depth;
    let mut in_string = false;
    let mut nulls = Nulls::None;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'\\') => {
                if bytes.get(i + 1..i + 6) == Some(b"u0000".as_slice()) {
                    return Err(JsonProblem::Nul);
                }
                // Skips the escaped character, which may be a quote.
                i += 1;
            }
            (true, b'"') => in_string = false,
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(JsonProblem::TooDeep);
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, b'n') => nulls = Nulls::Some,
            _ => {}
        }
        i += 1;
    }
    Ok(nulls)
}

/// serde_json's compact output, checked as it is written: nesting, U+0000
/// in strings and keys (written as the escape `\u0000`), and whether a
/// `null` appears (a NaN or an infinity is written as one). The first
/// problem stops the serialization with an I/O error that [`Checks::problem`]
/// explains.
struct CheckingFormatter<'a>(&'a mut Checks);

/// What a [`CheckingFormatter`] found.
#[derive(Debug, Default)]
struct Checks {
    depth: usize,
    nulls: bool,
    problem: Option<JsonProblem>,
}

impl CheckingFormatter<'_> {
    fn refuse(&mut self, problem: JsonProblem) -> std::io::Error {
        self.0.problem = Some(problem);
        std::io::Error::other("the payload cannot be stored")
    }

    fn open(&mut self) -> std::io::Result<()> {
        self.0.depth += 1;
        if self.0.depth > MAX_JSON_DEPTH {
            return Err(self.refuse(JsonProblem::TooDeep));
        }
        Ok(())
    }

    fn close(&mut self) {
        self.0.depth = self.0.depth.saturating_sub(1);
    }
}

impl Formatter for CheckingFormatter<'_> {
    fn write_null<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.nulls = true;
        CompactFormatter.write_null(writer)
    }

    fn write_char_escape<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> std::io::Result<()> {
        if matches!(char_escape, CharEscape::AsciiControl(0)) {
            return Err(self.refuse(JsonProblem::Nul));
        }
        CompactFormatter.write_char_escape(writer, char_escape)
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.open()?;
        CompactFormatter.begin_array(writer)
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.close();
        CompactFormatter.end_array(writer)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.open()?;
        CompactFormatter.begin_object(writer)
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.close();
        CompactFormatter.end_object(writer)
    }

    /// Text a `RawValue` carries is written as it is: checked as text,
    /// from the depth it sits at.
    fn write_raw_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        match check_json_text(fragment, self.0.depth) {
            Ok(nulls) => self.0.nulls |= nulls == Nulls::Some,
            Err(problem) => return Err(self.refuse(problem)),
        }
        CompactFormatter.write_raw_fragment(writer, fragment)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(levels: usize) -> serde_json::Value {
        (0..levels).fold(json!(1), |inner, _| json!([inner]))
    }

    /// Serializes as the payload it encodes while being serialized.
    struct EncodesWhileSerialized;

    impl Serialize for EncodesWhileSerialized {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let inner = Payload::encode(&json!({"inner": [1, 2]}))
                .map_err(serde::ser::Error::custom)?
                .map_err(|p| serde::ser::Error::custom(format!("{p:?}")))?;
            serializer.serialize_str(inner.as_json())
        }
    }

    #[test]
    fn a_payload_encoded_inside_another_encoding_is_whole() {
        let outer = Payload::encode(&EncodesWhileSerialized).unwrap().unwrap();
        assert_eq!(outer.as_json(), r#""{\"inner\":[1,2]}""#);
    }

    #[test]
    fn a_huge_payload_does_not_keep_its_buffer() {
        let huge = json!({ "blob": "z".repeat(4 * MAX_KEPT_ENCODE_BUFFER) });
        let encoded = Payload::encode(&huge).unwrap().unwrap();
        assert_eq!(encoded.to_value().unwrap(), huge);
        let kept = ENCODE_BUFFER.with(|buffer| buffer.borrow().capacity());
        assert!(kept <= MAX_KEPT_ENCODE_BUFFER, "kept {kept} bytes");
        let small = Payload::encode(&json!({"n": 1})).unwrap().unwrap();
        assert_eq!(small.as_json(), r#"{"n":1}"#);
    }

    fn check_cases() -> Vec<serde_json::Value> {
        vec![
            json!({"a": "plain", "b": [1, 2, {"c": null}]}),
            json!({"a\u{0}": 1}),
            json!({"a": "x\u{0}y"}),
            json!({"a": "back\\u0000slash"}),
            json!({"quote\"": "\\\"\u{1}"}),
            json!("\\"),
            nested(MAX_JSON_DEPTH - 1),
            nested(MAX_JSON_DEPTH),
            nested(MAX_JSON_DEPTH + 1),
            json!({"a": nested(MAX_JSON_DEPTH - 1)}),
            json!({"a": nested(MAX_JSON_DEPTH)}),
            json!({"[[[": "{{{", "b": nested(MAX_JSON_DEPTH - 1)}),
            json!({"]]]": "}}}", "b": nested(MAX_JSON_DEPTH)}),
        ]
    }

    #[test]
    fn text_checks_agree_with_value_checks() {
        for value in check_cases() {
            let text = serde_json::to_string(&value).unwrap();
            assert_eq!(
                check_json_text(&text, 0).map(|_| ()),
                check_json(&value, 1),
                "{text}"
            );
        }
    }

    /// Encoding checks as it writes; it must refuse exactly what the checks
    /// of a value refuse.
    #[test]
    fn encoding_refuses_what_value_checks_refuse() {
        for value in check_cases() {
            assert_eq!(
                Payload::encode(&value).unwrap().map(|_| ()),
                check_json(&value, 1),
                "{value}"
            );
        }
    }

    /// A `RawValue` is written as its text, past the formatter's own
    /// checks: its text is checked from the depth it sits at.
    #[test]
    fn raw_json_inside_a_payload_is_checked_too() {
        #[derive(Serialize)]
        struct Holder {
            raw: Box<serde_json::value::RawValue>,
        }
        let holder = |text: String| Holder {
            raw: serde_json::value::RawValue::from_string(text).unwrap(),
        };
        let encode = |text: String| Payload::encode(&holder(text)).unwrap().map(|_| ());
        assert_eq!(
            encode(r#"{"a":"x\u0000"}"#.to_owned()),
            Err(JsonProblem::Nul)
        );
        assert_eq!(encode(r#"{"a":[1,null]}"#.to_owned()), Ok(()));
        // The holder is one level: the raw text may nest one level less.
        let nest = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(encode(nest(MAX_JSON_DEPTH - 1)), Ok(()));
        assert_eq!(encode(nest(MAX_JSON_DEPTH)), Err(JsonProblem::TooDeep));
        let encoded = Payload::encode(&holder(nest(2))).unwrap().unwrap();
        assert_eq!(encoded.as_json(), r#"{"raw":[[1]]}"#);
    }

    #[test]
    fn non_finite_floats_are_refused_and_nulls_are_not() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                Payload::encode(&vec![Some(1.0), None, Some(value)]).unwrap(),
                Err(JsonProblem::NonFinite)
            );
        }
        assert!(Payload::encode(&vec![Some(1.0), None]).unwrap().is_ok());
        assert!(
            Payload::encode(&json!({"n": null, "s": "nan"}))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn serializes_as_the_value_it_holds() {
        let payload = Payload::encode(&json!({"n": 1})).unwrap().unwrap();
        let text = serde_json::to_string(&payload).unwrap();
        assert_eq!(text, r#"{"n":1}"#);
        let back: Payload = serde_json::from_str(&text).unwrap();
        assert_eq!(back, payload);
    }
}
