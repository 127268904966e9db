//! The rule shared by stream ids, event types and idempotency keys.

/// How a name breaks the rule: 1 to `max` characters, no control characters.
pub(crate) enum NameViolation {
    /// No characters.
    Empty,
    /// A control character at `index` (in characters).
    ControlCharacter { index: usize, code_point: u32 },
    /// More than `max` characters.
    TooLong { chars: usize },
}

/// Checks `value` against the rule, reporting the first violation.
pub(crate) fn check_name(value: &str, max: usize) -> Result<(), NameViolation> {
    if value.is_empty() {
        return Err(NameViolation::Empty);
    }
    if let Some((index, c)) = value.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(NameViolation::ControlCharacter {
            index,
            code_point: u32::from(c),
        });
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(NameViolation::TooLong { chars });
    }
    Ok(())
}

/// The impls of a validated name held as `Arc<str>`: cloning one (every
/// event read carries its stream id and type name) bumps a reference count
/// instead of copying the string. nutype's string support holds a `String`,
/// so these two types are written out here, once, for both.
///
/// `$check` validates the stored form, `$trim` says whether surrounding
/// whitespace is removed first.
macro_rules! arc_name {
    ($name:ident, $error:ty, $check:path, trim = $trim:literal) => {
        impl $name {
            /// Checks `value` and makes the name from it.
            ///
            /// # Errors
            #[doc = concat!("[`", stringify!($error), "`] naming the first rule the value breaks.")]
            pub fn try_new(value: impl AsRef<str>) -> Result<Self, $error> {
                let value = value.as_ref();
                let value = if $trim { value.trim() } else { value };
                $check(value)?;
                Ok(Self(std::sync::Arc::from(value)))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned `String`.
            pub fn into_inner(self) -> String {
                String::from(&*self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&&*self.0).finish()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = $error;
            fn from_str(value: &str) -> Result<Self, $error> {
                Self::try_new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $error;
            fn try_from(value: &str) -> Result<Self, $error> {
                Self::try_new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $error;
            fn try_from(value: String) -> Result<Self, $error> {
                Self::try_new(value)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.into_inner()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::try_new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use arc_name;
