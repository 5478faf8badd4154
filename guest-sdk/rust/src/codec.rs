//! Message types and the body encodings Courier speaks.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message type: a struct with a message type URN attached.
///
/// Derive it with `#[derive(Message)]` and `#[message(urn = "urn:message:Namespace:Type")]`
/// (or `#[message(namespace = "Namespace")]` to take the type name from the struct).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Courier message",
    label = "a handler's first parameter must be a message type",
    note = "derive it: #[derive(courier_sdk::Message)] with #[message(urn = \"urn:message:Namespace:Type\")]"
)]
pub trait Message {
    /// The message type URN, e.g. `urn:message:Orders:OrderPlaced`.
    const MESSAGE_TYPE: &'static str;
}

/// How a body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// `application/msgpack`, with field names (the default).
    #[default]
    MessagePack,
    /// `application/json`.
    Json,
}

impl ContentType {
    /// The MIME type carried in the envelope.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::MessagePack => "application/msgpack",
            ContentType::Json => "application/json",
        }
    }

    /// Recognises a MIME type; parameters such as `; charset=utf-8` are ignored.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Some(ContentType::MessagePack)
            }
            "application/json" => Some(ContentType::Json),
            _ => None,
        }
    }

    /// Encodes a value in this content type.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, String> {
        match self {
            ContentType::MessagePack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
            ContentType::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        }
    }

    /// Decodes a value from this content type. The error names the field that did not
    /// decode, e.g. "field `lines[0].quantity`: invalid type: string, expected u32".
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, String> {
        match self {
            ContentType::MessagePack => {
                let mut reader = rmp_serde::Deserializer::from_read_ref(body);
                serde_path_to_error::deserialize(&mut reader).map_err(|e| at_path(&e))
            }
            ContentType::Json => {
                let mut reader = serde_json::Deserializer::from_slice(body);
                let value =
                    serde_path_to_error::deserialize(&mut reader).map_err(|e| at_path(&e))?;
                reader.end().map_err(|e| e.to_string())?;
                Ok(value)
            }
        }
    }
}

/// A decoding error with the path of the field it happened in, when it is not the body itself.
fn at_path<E: std::fmt::Display>(error: &serde_path_to_error::Error<E>) -> String {
    let path = error.path().to_string();
    if path == "." {
        error.inner().to_string()
    } else {
        format!("field `{path}`: {}", error.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        order_id: String,
        amount_cents: u64,
    }

    #[test]
    fn both_encodings_round_trip() {
        let sample = Sample {
            order_id: "o-1".into(),
            amount_cents: 1250,
        };
        for ct in [ContentType::MessagePack, ContentType::Json] {
            let body = ct.encode(&sample).unwrap();
            assert_eq!(ct.decode::<Sample>(&body).unwrap(), sample, "{ct:?}");
        }
    }

    #[test]
    fn msgpack_keeps_field_names_so_other_languages_can_read_it() {
        let body = ContentType::MessagePack
            .encode(&Sample {
                order_id: "o-1".into(),
                amount_cents: 5,
            })
            .unwrap();
        let as_map: std::collections::BTreeMap<String, serde_json::Value> =
            rmp_serde::from_slice(&body).unwrap();
        assert!(as_map.contains_key("order_id"));
        assert!(as_map.contains_key("amount_cents"));
    }

    #[test]
    fn mime_parameters_and_case_are_ignored() {
        assert_eq!(
            ContentType::from_mime("Application/JSON; charset=utf-8"),
            Some(ContentType::Json)
        );
        assert_eq!(
            ContentType::from_mime("application/x-msgpack"),
            Some(ContentType::MessagePack)
        );
        assert_eq!(ContentType::from_mime("text/plain"), None);
    }

    #[test]
    fn a_field_that_does_not_decode_is_named_by_its_path() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code, reason = "only decoded")]
        struct Outer {
            lines: Vec<Sample>,
        }
        for ct in [ContentType::MessagePack, ContentType::Json] {
            let body = ct
                .encode(&serde_json::json!({"lines": [{"order_id": "o", "amount_cents": "x"}]}))
                .unwrap();
            let error = ct.decode::<Outer>(&body).unwrap_err();
            assert!(
                error.starts_with("field `lines[0].amount_cents`: "),
                "{ct:?}: {error}"
            );
        }
    }

    #[test]
    fn a_body_of_the_wrong_shape_does_not_decode() {
        let body = ContentType::Json.encode(&vec![1, 2, 3]).unwrap();
        assert!(ContentType::Json.decode::<Sample>(&body).is_err());
    }
}
