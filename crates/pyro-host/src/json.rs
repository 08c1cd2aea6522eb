//! A span-aware reader for JSON and JSONC (comments, trailing commas) config files, so an edit
//! replaces or inserts exactly one member and every other byte of the file stays as it was.
//! Re-serialising the whole file would drop comments, reorder keys and change spacing.

use serde_json::Value;

/// A parsed value with the byte range it covers in the source.
#[derive(Debug)]
pub(crate) struct Node {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// What a node is.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Members in source order: decoded key and value.
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    /// A string, number, `true`, `false` or `null`.
    Scalar(Value),
}

impl Node {
    /// The member `key` of an object (the last one when a key repeats, as JSON parsers do).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as serde_json sees it (comments dropped).
    pub fn to_value(&self) -> Value {
        match &self.kind {
            Kind::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
            Kind::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Kind::Scalar(v) => v.clone(),
        }
    }
}

/// Parses a whole document. Errors name the byte offset and line.
pub(crate) fn parse(src: &str) -> Result<Node, String> {
    let mut p = Parser { s: src.as_bytes(), src, i: 0 };
    if src.starts_with('\u{feff}') {
        p.i = 3;
    }
    p.ws()?;
    let node = p.value(0)?;
    p.ws()?;
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after the top-level value"));
    }
    Ok(node)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> String {
        let line = self.src[..self.i.min(self.src.len())].matches('\n').count() + 1;
        format!("{what} at line {line} (byte {})", self.i)
    }

    /// Skips whitespace and comments.
    fn ws(&mut self) -> Result<(), String> {
        loop {
            match self.s.get(self.i) {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'/') => {
                    while self.i < self.s.len() && self.s[self.i] != b'\n' {
                        self.i += 1;
                    }
                }
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'*') => {
                    let Some(end) = self.src[self.i + 2..].find("*/") else {
                        return Err(self.err("unterminated /* comment"));
                    };
                    self.i += 2 + end + 2;
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, String> {
        if depth > 256 {
            return Err(self.err("nesting too deep"));
        }
        let start = self.i;
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                loop {
                    self.ws()?;
                    if self.s.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        break;
                    }
                    if self.s.get(self.i) != Some(&b'"') {
                        return Err(self.err("expected a quoted key or '}'"));
                    }
                    let key = match self.string()? {
                        Value::String(k) => k,
                        _ => unreachable!("string() yields strings"),
                    };
                    self.ws()?;
                    if self.s.get(self.i) != Some(&b':') {
                        return Err(self.err("expected ':'"));
                    }
                    self.i += 1;
                    self.ws()?;
                    let v = self.value(depth + 1)?;
                    members.push((key, v));
                    self.ws()?;
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {}
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
                Ok(Node { start, end: self.i, kind: Kind::Object(members) })
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws()?;
                    if self.s.get(self.i) == Some(&b']') {
                        self.i += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    self.ws()?;
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {}
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
                Ok(Node { start, end: self.i, kind: Kind::Array(items) })
            }
            Some(b'"') => {
                let v = self.string()?;
                Ok(Node { start, end: self.i, kind: Kind::Scalar(v) })
            }
            Some(_) => {
                while self.i < self.s.len()
                    && matches!(self.s[self.i], b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
                {
                    self.i += 1;
                }
                let raw = &self.src[start..self.i];
                let v: Value = serde_json::from_str(raw).map_err(|_| {
                    self.i = start;
                    self.err("expected a JSON value")
                })?;
                Ok(Node { start, end: self.i, kind: Kind::Scalar(v) })
            }
            None => Err(self.err("unexpected end of file")),
        }
    }

    /// A string literal, decoded by serde_json (escapes, surrogates).
    fn string(&mut self) -> Result<Value, String> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.s.get(self.i) {
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(_) => self.i += 1,
                None => {
                    self.i = start;
                    return Err(self.err("unterminated string"));
                }
            }
        }
        serde_json::from_str(&self.src[start..self.i]).map_err(|e| {
            self.i = start;
            self.err(&format!("bad string ({e})"))
        })
    }
}

/// The file's layout conventions, so inserted text looks like the rest.
pub(crate) struct Style {
    /// One level of indentation (two spaces when the file shows none).
    pub indent: String,
    /// `\r\n` when the file uses it.
    pub newline: &'static str,
}

impl Style {
    pub fn of(src: &str) -> Style {
        let newline = if src.contains("\r\n") { "\r\n" } else { "\n" };
        let indent = src
            .lines()
            .map(|l| &l[..l.len() - l.trim_start_matches([' ', '\t']).len()])
            .find(|w| !w.is_empty())
            .unwrap_or("  ")
            .to_string();
        Style { indent, newline }
    }

    /// `value` pretty-printed with this style, its continuation lines indented `depth` levels.
    pub fn render(&self, value: &Value, depth: usize) -> String {
        use serde::Serialize;
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(self.indent.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        value.serialize(&mut ser).expect("a Value serialises");
        let text = String::from_utf8(buf).expect("serde_json writes UTF-8");
        let sep = format!("{}{}", self.newline, self.indent.repeat(depth));
        text.split('\n').collect::<Vec<_>>().join(&sep)
    }
}

/// The edit that sets `path` (object keys from the root) to `value`: replaces the existing
/// value's bytes, or inserts the missing members into the deepest existing object.
/// Returns the new text; everything outside the replaced or inserted span is untouched.
pub(crate) fn set(src: &str, path: &[&str], value: &Value) -> Result<String, String> {
    let style = Style::of(src);
    if src.trim_start_matches('\u{feff}').trim().is_empty() {
        let mut v = value.clone();
        for key in path.iter().rev() {
            v = serde_json::json!({ *key: v });
        }
        return Ok(format!("{}{}", style.render(&v, 0), style.newline));
    }
    let root = parse(src)?;
    let mut node = &root;
    let mut depth = 0;
    for (n, key) in path.iter().enumerate() {
        if !matches!(node.kind, Kind::Object(_)) {
            let at = if n == 0 { "the top level".to_string() } else { format!("\"{}\"", path[..n].join(".")) };
            return Err(format!("{at} is not a JSON object; fix or remove it first"));
        }
        match node.get(key) {
            Some(child) => {
                node = child;
                depth += 1;
            }
            None => {
                // Insert `"key": <rest of path wrapped around value>` into `node`.
                let mut v = value.clone();
                for k in path[n + 1..].iter().rev() {
                    v = serde_json::json!({ *k: v });
                }
                let inner = style.indent.repeat(depth + 1);
                let member = format!(
                    "{}{}: {}",
                    inner,
                    serde_json::to_string(key).expect("a key serialises"),
                    style.render(&v, depth + 1)
                );
                let Kind::Object(members) = &node.kind else { unreachable!("checked above") };
                let out = match members.last() {
                    Some((_, last)) => {
                        format!("{},{}{}{}", &src[..last.end], style.newline, member, &src[last.end..])
                    }
                    None => format!(
                        "{}{}{}{}{}{}",
                        &src[..node.start + 1],
                        style.newline,
                        member,
                        style.newline,
                        style.indent.repeat(depth),
                        &src[node.start + 1..]
                    ),
                };
                return Ok(out);
            }
        }
    }
    Ok(format!("{}{}{}", &src[..node.start], style.render(value, depth), &src[node.end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replaces_only_the_entry() {
        let src =
            "{\n  // mine\n  \"a\": [1, 2,],\n  \"mcpServers\": { \"x\": 1, \"pyro\": {\"command\": \"old\"} },\n}\n";
        let out = set(src, &["mcpServers", "pyro"], &json!({"command": "new"})).unwrap();
        assert!(out.starts_with("{\n  // mine\n  \"a\": [1, 2,],\n  \"mcpServers\": { \"x\": 1, \"pyro\": {"));
        assert!(out.ends_with("} },\n}\n"));
        assert_eq!(
            parse(&out).unwrap().get("mcpServers").unwrap().get("pyro").unwrap().to_value(),
            json!({"command": "new"})
        );
    }

    #[test]
    fn inserts_missing_parents_and_keeps_crlf() {
        let src = "{\r\n    \"other\": \"é\" // c\r\n}\r\n";
        let out = set(src, &["mcpServers", "pyro"], &json!({"a": 1})).unwrap();
        assert_eq!(out, "{\r\n    \"other\": \"é\",\r\n    \"mcpServers\": {\r\n        \"pyro\": {\r\n            \"a\": 1\r\n        }\r\n    } // c\r\n}\r\n");
        let empty = set("{}", &["mcp", "pyro"], &json!(true)).unwrap();
        assert_eq!(parse(&empty).unwrap().to_value(), json!({"mcp": {"pyro": true}}));
    }

    #[test]
    fn refuses_non_objects_and_bad_files() {
        assert!(set("{\"mcpServers\": []}", &["mcpServers", "pyro"], &json!(1))
            .unwrap_err()
            .contains("\"mcpServers\" is not a JSON object"));
        assert!(set("{\"a\": }", &["mcpServers", "pyro"], &json!(1)).unwrap_err().contains("line 1"));
        assert!(parse("{\"a\": 1} x").is_err());
        assert!(parse("/* open").is_err());
    }
}
