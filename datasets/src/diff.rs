//! What differs between two JSON documents of settings, in words a person can act on:
//! `random.seed: 0 → 9`. Used to say why a complete dataset is not the one asked for, and why a
//! run cannot resume with other flags.

use serde_json::Value;

/// The leaves that differ between `old` and `new`, as `path: old → new` (nested keys joined by
/// `.`); a key absent on one side counts as `null` there. String values of keys named in
/// `paths` are compared as files (the same file however it is named counts as equal).
pub fn differences(old: &Value, new: &Value, paths: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", old, new, paths, &mut out);
    out
}

fn diff_into(at: &str, old: &Value, new: &Value, paths: &[&str], out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let name = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                diff_into(&name, a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), paths, out);
            }
        }
        (a, b) if a == b => {}
        (Value::String(a), Value::String(b)) if paths.contains(&at) && same_file(a, b) => {}
        (a, b) if at.is_empty() => out.push(format!("{a} → {b}")),
        (a, b) => out.push(format!("{at}: {a} → {b}")),
    }
}

fn same_file(a: &str, b: &str) -> bool {
    matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_differing_leaf() {
        let a = json!({"source": "random", "random": {"seed": 0, "count": 4}, "resize": null});
        let b = json!({"source": "random", "random": {"seed": 9, "count": 4}, "resize": 16, "new": true});
        assert_eq!(differences(&a, &b, &[]), ["new: null → true", "random.seed: 0 → 9", "resize: null → 16"]);
        assert!(differences(&a, &a, &[]).is_empty());
        let dir = std::env::temp_dir();
        let other = format!("{}/.", dir.display());
        let (x, y) = (json!({"src": dir.display().to_string()}), json!({"src": other}));
        assert!(differences(&x, &y, &["src"]).is_empty());
        assert_eq!(differences(&x, &y, &[]).len(), 1);
    }
}
