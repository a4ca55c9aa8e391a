//! The operator's policy file: the subset of oslo.policy's YAML and JSON
//! files that policy files use, a flat mapping of rule name to check string.
//!
//! YAML: one `"name": "check"` per line (keys and values plain, single- or
//! double-quoted), `#` comments and blank lines; a value may continue on
//! indented lines (folded with a space), as oslopolicy-sample-generator
//! writes long rules. JSON: one object of strings. Anything else (nested
//! mappings, lists, anchors) is refused with the line it is on.

/// Parses the file text into (name, check string) pairs, or (line, message).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    if text.trim_start().starts_with('{') {
        return parse_json(text);
    }
    let mut rules: Vec<(String, String)> = Vec::new();
    // A quoted value still open across lines: (key, text so far, first line).
    let mut open: Option<(String, String, usize)> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        if let Some((key, mut partial, first)) = open.take() {
            partial.push(' ');
            partial.push_str(raw.trim());
            if is_closed(&partial) {
                let value = unquote(&partial).map_err(|m| (first, m))?;
                push_rule(&mut rules, key, value);
            } else {
                open = Some((key, partial, first));
            }
            continue;
        }
        let line = strip_comment(raw);
        if line.trim().is_empty() || line.trim() == "---" {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if indented {
            // A continuation of the previous plain value.
            let Some((_, value)) = rules.last_mut() else {
                return Err((line_no, "indented line with no rule before it".into()));
            };
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(line.trim());
            continue;
        }
        let (key, value) = split_key(line).ok_or((
            line_no,
            "expected \"rule name\": \"check string\"".to_string(),
        ))?;
        let key = unquote(key.trim()).map_err(|m| (line_no, m))?;
        let value = value.trim();
        if value.starts_with('[') || value.starts_with('{') || value.starts_with('&') {
            return Err((
                line_no,
                "only strings are supported as check strings".to_string(),
            ));
        }
        if key.is_empty() {
            return Err((line_no, "empty rule name".into()));
        }
        if !is_closed(value) {
            open = Some((key, value.to_string(), line_no));
            continue;
        }
        let value = unquote(value).map_err(|m| (line_no, m))?;
        push_rule(&mut rules, key, value);
    }
    if let Some((_, _, first)) = open {
        return Err((first, "unterminated string".into()));
    }
    Ok(rules)
}

fn push_rule(rules: &mut Vec<(String, String)>, key: String, value: String) {
    rules.retain(|(k, _)| *k != key);
    rules.push((key, value));
}

/// Whether a value is plain or its opening quote is closed.
fn is_closed(value: &str) -> bool {
    let value = value.trim_end();
    match value.chars().next() {
        Some(q @ ('"' | '\'')) => value.len() >= 2 && value.ends_with(q),
        _ => true,
    }
}

fn parse_json(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| (e.line(), e.to_string()))?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            _ => Err((0, format!("rule {k}: only strings are supported"))),
        })
        .collect()
}

/// Drops a `#` comment that is outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if i == 0 || line[..i].ends_with(' ') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

/// Splits `key: value` at the first colon outside quotes that is followed
/// by a space or the end of the line (rule names contain colons).
fn split_key(line: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') if i == 0 => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ':') if bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t') => {
                return Some((&line[..i], &line[i + 1..]));
            }
            _ => {}
        }
    }
    None
}

fn unquote(text: &str) -> Result<String, String> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated string {text}"))?;
        return serde_json::from_str::<String>(&format!("\"{inner}\""))
            .map_err(|e| format!("bad string {text}: {e}"));
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or_else(|| format!("unterminated string {text}"))?;
        return Ok(inner.replace("''", "'"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_what_the_sample_generator_writes() {
        let text = r#"
# List servers
"os_compute_api:servers:index": "rule:project_reader_api"
'get_image': 'role:reader and project_id:%(project_id)s'  # trailing comment
plain_key: role:admin
"identity:get_user": "(role:reader and system_scope:all) or
  user_id:%(target.user.id)s"
"empty": ""
"#;
        let rules = parse(text).expect("parses");
        assert_eq!(rules.len(), 5);
        assert_eq!(rules[0].0, "os_compute_api:servers:index");
        assert_eq!(rules[1].1, "role:reader and project_id:%(project_id)s");
        assert_eq!(rules[2], ("plain_key".into(), "role:admin".into()));
        assert_eq!(
            rules[3].1,
            "(role:reader and system_scope:all) or user_id:%(target.user.id)s"
        );
        assert_eq!(rules[4].1, "");
    }

    #[test]
    fn reads_json_and_refuses_nesting() {
        let rules = parse(r#"{"a": "role:x", "b": "@"}"#).expect("json");
        assert_eq!(rules.len(), 2);
        assert!(parse("a:\n  - b\n").is_err() || parse("a: [b]").is_err());
        assert!(parse("a: [b]").is_err());
        assert!(parse(r#"{"a": 1}"#).is_err());
    }
}
