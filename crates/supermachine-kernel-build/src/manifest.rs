//! Reader for `payload/manifest.toml` (written by `scripts/lib/payload.py`).
//!
//! The format is a TOML subset: `[name]` tables holding `key = "string"` or `key = integer`
//! lines, plus comments. A tiny parser keeps the build graph free of serde.

use std::collections::BTreeMap;

/// One payload's manifest table.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Table name (the payload's short name).
    pub name: String,
    /// Field values, integers kept as their decimal text.
    pub fields: BTreeMap<String, String>,
}

impl Entry {
    /// A required field, or an error naming the manifest, table and field.
    pub fn get(&self, key: &str) -> Result<&str, String> {
        self.fields.get(key).map(String::as_str).ok_or_else(|| format!("table [{}] has no `{key}` field", self.name))
    }
}

/// Parses manifest text. Errors carry the line number.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let lineno = i + 1;
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            entries.push(Entry { name: name.trim().to_string(), ..Entry::default() });
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or_else(|| format!("line {lineno}: expected `key = value`, found `{line}`"))?;
        let value = value.trim();
        let value = if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            s.to_string()
        } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            value.to_string()
        } else {
            return Err(format!("line {lineno}: value of `{}` must be a \"string\" or an integer", key.trim()));
        };
        let entry =
            entries.last_mut().ok_or_else(|| format!("line {lineno}: `{}` appears before any [table]", key.trim()))?;
        entry.fields.insert(key.trim().to_string(), value);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_tables_and_reports_bad_lines() {
        let m = super::parse("# c\n[kernel]\nfile = \"kernel.xz\"\nsize = 12\n\n[busybox]\nfile = \"b.xz\"\n").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].get("file").unwrap(), "kernel.xz");
        assert_eq!(m[0].get("size").unwrap(), "12");
        assert!(m[1].get("size").unwrap_err().contains("[busybox] has no `size`"));
        assert!(super::parse("[a]\nsize = twelve\n").unwrap_err().contains("line 2"));
        assert!(super::parse("file = \"x\"\n").unwrap_err().contains("before any [table]"));
    }
}
