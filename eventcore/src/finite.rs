//! Finding floating-point values JSON cannot hold.
//!
//! serde_json writes `NaN` and the infinities as `null`, so a payload
//! holding one would be stored as something else than it was, and read back
//! as an error (or a silent `None`). This serializer writes nothing: it only
//! walks a value the way serialization would and stops at the first
//! non-finite float. Payloads run it only when their JSON text holds a
//! `null`, the one trace such a float leaves.

use std::fmt;

use serde::{
    Serialize, Serializer,
    ser::{
        SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
        SerializeTupleStruct, SerializeTupleVariant,
    },
};

/// Whether `value` serializes some `f32` or `f64` that is NaN or infinite.
pub(crate) fn has_non_finite<T: Serialize + ?Sized>(value: &T) -> bool {
    matches!(value.serialize(FiniteCheck), Err(Found::NonFinite))
}

/// Walks a value, failing at the first non-finite float.
struct FiniteCheck;

/// Why the walk stopped.
#[derive(Debug)]
enum Found {
    NonFinite,
    /// The value's own `Serialize` failed; the JSON encoding reports that.
    Other,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonFinite => f.write_str("a float that is NaN or infinite"),
            Self::Other => f.write_str("the value failed to serialize"),
        }
    }
}

impl std::error::Error for Found {}

impl serde::ser::Error for Found {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self::Other
    }
}

fn float(value: f64) -> Result<(), Found> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Found::NonFinite)
    }
}

impl Serializer for FiniteCheck {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_f32(self, value: f32) -> Result<(), Found> {
        float(f64::from(value))
    }
    fn serialize_f64(self, value: f64) -> Result<(), Found> {
        float(value)
    }
    fn serialize_char(self, _: char) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Found> {
        Ok(self)
    }
}

impl SerializeSeq for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl SerializeTuple for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl SerializeTupleStruct for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl SerializeTupleVariant for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl SerializeMap for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Found> {
        key.serialize(FiniteCheck)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl SerializeStruct for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

impl SerializeStructVariant for FiniteCheck {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        value.serialize(FiniteCheck)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::has_non_finite;

    #[derive(serde::Serialize)]
    enum Shape {
        Point,
        Circle { radius: f64 },
        Pair(f32, Option<f64>),
    }

    #[test]
    fn finds_non_finite_floats_wherever_they_sit() {
        assert!(!has_non_finite(&1.5_f64));
        assert!(has_non_finite(&f64::NAN));
        assert!(has_non_finite(&f32::INFINITY));
        assert!(has_non_finite(&vec![1.0, f64::NEG_INFINITY]));
        assert!(has_non_finite(&Some(f64::NAN)));
        assert!(!has_non_finite(&Shape::Point));
        assert!(has_non_finite(&Shape::Circle { radius: f64::NAN }));
        assert!(has_non_finite(&Shape::Pair(0.0, Some(f64::INFINITY))));
        assert!(!has_non_finite(&Shape::Pair(0.0, None)));
        let mut map = BTreeMap::new();
        map.insert("x", (1_u8, vec![2.0_f64, f64::NAN]));
        assert!(has_non_finite(&map));
        assert!(!has_non_finite(&serde_json::json!({"a": [null, 1.5]})));
    }
}
