//! Reading Aliyun's JSON leniently (every product answers this way): list wrappers (`"Xs":{"X":[…]}`) may be
//! missing when empty, and numbers may come as strings or the other way round.

use serde_json::Value;

/// The items of a wrapped list, `value[outer][inner]`; none when absent.
#[must_use]
pub fn list<'a>(value: &'a Value, outer: &str, inner: &str) -> &'a [Value] {
    match value.get(outer) {
        Some(Value::Object(wrapper)) => match wrapper.get(inner) {
            Some(Value::Array(items)) => items,
            _ => &[],
        },
        // Some answers drop the wrapper and give the array directly.
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

/// A field as text, whether it came as a string or a number.
#[must_use]
pub fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A field as a number, whether it came as a number or a string.
#[must_use]
pub fn number(value: &Value, field: &str) -> Option<f64> {
    match value.get(field) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A port field (a number, or a number as text) when it is 1–65535.
#[must_use]
pub fn port(value: &Value, field: &str) -> Option<u16> {
    let n = number(value, field)?;
    if (1.0..=65_535.0).contains(&n) && n.fract() == 0.0 {
        format!("{n:.0}").parse().ok()
    } else {
        None
    }
}

/// The strings of a wrapped list (`"X":{"Y":["a","b"]}`).
#[must_use]
pub fn strings(value: &Value, outer: &str, inner: &str) -> Vec<String> {
    list(value, outer, inner)
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Aliyun's times (`2017-12-10T04:04Z`, often without seconds) as RFC 3339.
#[must_use]
pub fn rfc3339(time: &str) -> Option<String> {
    let time = time.trim();
    if time.is_empty() {
        return None;
    }
    // `YYYY-MM-DDThh:mmZ` → add the seconds.
    if time.len() == 17 && time.ends_with('Z') && time.as_bytes().get(13) == Some(&b':') {
        return Some(format!("{}:00Z", &time[..16]));
    }
    Some(time.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wrappers_may_be_missing_and_numbers_may_be_strings() {
        let v = json!({"Instances": {"Instance": [{"Cpu": "2"}]}, "Empty": {}, "Bare": [1], "TotalCount": "7"});
        assert_eq!(list(&v, "Instances", "Instance").len(), 1);
        assert!(list(&v, "Empty", "Thing").is_empty());
        assert!(list(&v, "Absent", "Thing").is_empty());
        assert_eq!(list(&v, "Bare", "X").len(), 1);
        assert_eq!(number(&v, "TotalCount"), Some(7.0));
        assert_eq!(
            number(&list(&v, "Instances", "Instance")[0], "Cpu"),
            Some(2.0)
        );
        assert_eq!(text(&json!({"Weight": 100}), "Weight"), "100");
        let ports = json!({"A": 80, "B": "8080", "C": 0, "D": 70_000, "E": 1.5});
        assert_eq!(
            (port(&ports, "A"), port(&ports, "B")),
            (Some(80), Some(8080))
        );
        for field in ["C", "D", "E", "F"] {
            assert_eq!(port(&ports, field), None, "{field}");
        }
    }

    #[test]
    fn times_gain_their_seconds() {
        assert_eq!(
            rfc3339("2017-12-10T04:04Z").as_deref(),
            Some("2017-12-10T04:04:00Z")
        );
        assert_eq!(
            rfc3339("2017-12-10T04:04:05Z").as_deref(),
            Some("2017-12-10T04:04:05Z")
        );
        assert_eq!(rfc3339(""), None);
    }
}
