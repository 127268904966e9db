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
