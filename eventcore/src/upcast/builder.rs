//! Registering upcasters, checked when built.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{Chooser, Registry, Retype, Transform, Types, Upcasters};
use crate::{BoxError, EventType, InvalidUpcasters};

/// Registers upcasters; [`build`](Self::build) checks they fit together.
///
/// Type names are checked when built, so the calls chain without `?`.
///
/// ```
/// use eventcore::Upcasters;
///
/// let upcasters = Upcasters::builder()
///     .rename("AccountCredited", "Deposited") // an old name
///     .step("Deposited", 1, |v| Ok(v)) // v1 -> v2 with the same fields
///     .build()?;
/// assert_eq!(upcasters.current_version("Deposited"), Some(2));
/// # Ok::<(), eventcore::InvalidUpcasters>(())
/// ```
#[derive(Default)]
pub struct UpcastersBuilder {
    steps: Vec<(String, u32, Transform)>,
    retypes: Vec<(String, PendingRetype)>,
}

/// A rename or split as registered, names not yet checked.
enum PendingRetype {
    Rename(String, Option<Transform>),
    Split(Vec<String>, Chooser),
}

impl fmt::Debug for UpcastersBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpcastersBuilder")
            .field(
                "steps",
                &self
                    .steps
                    .iter()
                    .map(|(t, v, _)| (t, v))
                    .collect::<Vec<_>>(),
            )
            .field(
                "retypes",
                &self
                    .retypes
                    .iter()
                    .map(|(from, _)| from)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl UpcastersBuilder {
    /// Registers the upcaster reading `event_type` at schema version `from`
    /// as version `from + 1`, on JSON. An error (any error type converts
    /// with `?`, a `&str` with `.into()`) is reported as an
    /// [`UpcastError`](crate::UpcastError) naming the event.
    ///
    /// ```
    /// use eventcore::Upcasters;
    ///
    /// // v2 split `name` into `first` and `last`.
    /// let upcasters = Upcasters::builder()
    ///     .step("CustomerRegistered", 1, |mut v| {
    ///         let name = v["name"].as_str().ok_or("CustomerRegistered v1 has no name")?.to_owned();
    ///         let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
    ///         v["first"] = first.into();
    ///         v["last"] = last.into();
    ///         v.as_object_mut().ok_or("not an object")?.remove("name");
    ///         Ok(v)
    ///     })
    ///     .build()?;
    /// # Ok::<(), eventcore::InvalidUpcasters>(())
    /// ```
    #[must_use]
    pub fn step<F>(mut self, event_type: &str, from: u32, upcast: F) -> Self
    where
        F: Fn(Value) -> Result<Value, BoxError> + Send + Sync + 'static,
    {
        let transform: Transform = Arc::new(upcast);
        self.steps.push((event_type.to_owned(), from, transform));
        self
    }

    /// Registers a typed upcaster: the stored payload decodes into `Old`,
    /// `upcast` makes the `New` shape, which is read as version `from + 1`.
    ///
    /// ```
    /// use eventcore::Upcasters;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Deserialize)]
    /// struct PriceSetV1 { cents: u64 }
    /// #[derive(Serialize)]
    /// struct PriceSetV2 { amount: u64, currency: String }
    ///
    /// let upcasters = Upcasters::builder()
    ///     .typed_step("PriceSet", 1, |old: PriceSetV1| PriceSetV2 {
    ///         amount: old.cents,
    ///         currency: "EUR".into(),
    ///     })
    ///     .build()?;
    /// # Ok::<(), eventcore::InvalidUpcasters>(())
    /// ```
    #[must_use]
    pub fn typed_step<Old, New, F>(self, event_type: &str, from: u32, upcast: F) -> Self
    where
        Old: DeserializeOwned,
        New: Serialize,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        self.step(event_type, from, move |value| {
            let old: Old = serde_json::from_value(value)?;
            Ok(serde_json::to_value(upcast(old))?)
        })
    }

    /// Reads events stored as `from` as `to`, at the same schema version.
    #[must_use]
    pub fn rename(mut self, from: &str, to: &str) -> Self {
        self.retypes
            .push((from.to_owned(), PendingRetype::Rename(to.to_owned(), None)));
        self
    }

    /// Reads events stored as `from` as `to`, at the same schema version,
    /// changing the payload on the way: for an enum event whose variant
    /// name is part of the JSON, say.
    #[must_use]
    pub fn rename_with<F>(mut self, from: &str, to: &str, upcast: F) -> Self
    where
        F: Fn(Value) -> Result<Value, BoxError> + Send + Sync + 'static,
    {
        let transform: Transform = Arc::new(upcast);
        self.retypes.push((
            from.to_owned(),
            PendingRetype::Rename(to.to_owned(), Some(transform)),
        ));
        self
    }

    /// Reads each event stored as `from` as one of the types `into`, chosen
    /// by its content: `choose` returns the name (one of `into`) and the
    /// payload in that type's shape, at the same schema version. For an
    /// event that turned out to mean two things.
    ///
    /// ```
    /// use eventcore::Upcasters;
    /// use serde_json::json;
    ///
    /// // `PaymentReceived { method }` became `CardPaid` and `CashPaid`.
    /// let upcasters = Upcasters::builder()
    ///     .split("PaymentReceived", &["CardPaid", "CashPaid"], |mut v| {
    ///         let method = v["method"].take();
    ///         match method.as_str() {
    ///             Some("card") => Ok(("CardPaid", v)),
    ///             Some("cash") => Ok(("CashPaid", v)),
    ///             _ => Err(format!("unknown payment method {method}").into()),
    ///         }
    ///     })
    ///     .build()?;
    /// # Ok::<(), eventcore::InvalidUpcasters>(())
    /// ```
    #[must_use]
    pub fn split<F, N>(mut self, from: &str, into: &[&str], choose: F) -> Self
    where
        F: Fn(Value) -> Result<(N, Value), BoxError> + Send + Sync + 'static,
        N: AsRef<str>,
    {
        let choose: Chooser = Arc::new(move |v| {
            let (name, value) = choose(v)?;
            Ok((name.as_ref().to_owned(), value))
        });
        let into = into.iter().map(|name| (*name).to_owned()).collect();
        self.retypes
            .push((from.to_owned(), PendingRetype::Split(into, choose)));
        self
    }

    /// Checks the upcasters fit together.
    ///
    /// # Errors
    /// [`InvalidUpcasters`]: an invalid type name, an upcaster from version
    /// 0 or from the last version, two upcasters for one type and version,
    /// a type renamed or split twice, a split into no type, or renames and
    /// splits that form a cycle.
    pub fn build(self) -> Result<Upcasters, InvalidUpcasters> {
        let name = |raw: String| {
            EventType::try_new(raw.as_str())
                .map_err(|source| InvalidUpcasters::EventType { name: raw, source })
        };
        let mut types = Types::default();
        for (raw, from, transform) in self.steps {
            let event_type = name(raw)?;
            if from == 0 {
                return Err(InvalidUpcasters::ZeroVersion { event_type });
            }
            if from == u32::MAX {
                return Err(InvalidUpcasters::VersionOverflow { event_type, from });
            }
            let evolution = types.entry(event_type.clone()).or_default();
            if evolution.steps.insert(from, transform).is_some() {
                return Err(InvalidUpcasters::DuplicateStep { event_type, from });
            }
        }
        for (raw_from, pending) in self.retypes {
            let from = name(raw_from)?;
            let retype = match pending {
                PendingRetype::Rename(to, transform) => Retype::Rename {
                    to: name(to)?,
                    transform,
                },
                PendingRetype::Split(into, choose) => {
                    if into.is_empty() {
                        return Err(InvalidUpcasters::EmptySplit { event_type: from });
                    }
                    Retype::Split {
                        into: into.into_iter().map(name).collect::<Result<_, _>>()?,
                        choose,
                    }
                }
            };
            if retype.targets().contains(&from) {
                return Err(InvalidUpcasters::RenameCycle { event_type: from });
            }
            let evolution = types.entry(from.clone()).or_default();
            if evolution.retype.is_some() {
                return Err(InvalidUpcasters::DuplicateRename { event_type: from });
            }
            evolution.retype = Some(retype);
        }
        if let Some(event_type) = retype_cycle(&types) {
            return Err(InvalidUpcasters::RenameCycle { event_type });
        }
        Ok(Upcasters {
            registry: (!types.is_empty()).then(|| Arc::new(Registry { types })),
        })
    }
}

/// A type on a cycle of renames and splits, if there is one (depth-first,
/// marking each name as on the current path or done).
fn retype_cycle(types: &Types) -> Option<EventType> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&EventType, Mark> = BTreeMap::new();
    for start in types.keys() {
        if marks.contains_key(start) {
            continue;
        }
        // (name, index of the next target to visit)
        let mut path: Vec<(&EventType, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::OnPath);
        while let Some((name, next)) = path.last_mut() {
            let targets = types
                .get(*name)
                .and_then(|e| e.retype.as_ref())
                .map_or(&[][..], Retype::targets);
            let Some(target) = targets.get(*next) else {
                marks.insert(*name, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            match marks.get(target) {
                Some(Mark::OnPath) => return Some(target.clone()),
                Some(Mark::Done) => {}
                None => {
                    marks.insert(target, Mark::OnPath);
                    path.push((target, 0));
                }
            }
        }
    }
    None
}
