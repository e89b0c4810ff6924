//! The LVM2 metadata text ("Text Format Volume Group"): a tree of sections
//! (`name { ... }`) and assignments (`key = value`), where a value is an
//! integer, a float, a double-quoted string or a flat array of those (libdm's
//! config syntax, `libdm/libdm-config.c`). `#` starts a comment.
//!
//! The parser is strict and bounded, because the text comes from the image: the
//! nesting depth, the number of nodes, the length of names and strings and of
//! arrays all have limits, and anything outside the grammar lvm2 writes (bare
//! words, single-quoted strings, nested arrays) is an error naming the line. The
//! writer prints a tree back in lvm2's layout, so a parsed tree that is edited
//! (new extent counts, a new seqno) can be written as a PV's metadata again.

use crate::error::{Error, Location, Result};

/// Deepest nesting of sections: lvm2's VG metadata goes four deep
/// (vg / logical_volumes / lv / segment).
pub const MAX_DEPTH: usize = 8;
/// Sections, assignments and array elements in one text.
pub const MAX_NODES: usize = 1 << 20;
/// The longest section or key name, and the longest string value.
pub const MAX_NAME: usize = 1024;
pub const MAX_STRING: usize = 64 << 10;

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    /// Kept as written (lvm2 VG metadata has none, but the syntax allows them).
    Float(String),
    Str(String),
    Array(Vec<Value>),
}

/// One entry of a section.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Value(Value),
    Section(Section),
}

/// A section: its entries in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub items: Vec<(String, Item)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key) {
            Some(Item::Section(s)) => Some(s),
            _ => None,
        }
    }

    pub fn section_mut(&mut self, key: &str) -> Option<&mut Section> {
        self.items.iter_mut().find_map(|(k, v)| match v {
            Item::Section(s) if k == key => Some(s),
            _ => None,
        })
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        match self.get(key) {
            Some(Item::Value(v)) => Some(v),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The strings of an array value (`status = ["READ", "WRITE"]`).
    pub fn strings(&self, key: &str) -> Vec<&str> {
        match self.value(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The subsections, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, v)| match v {
            Item::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }

    /// Sets `key` to `value`, replacing it where it is or appending it.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.items.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = Item::Value(value),
            None => self.items.push((key.to_string(), Item::Value(value))),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    line: u64,
    nodes: usize,
}

fn err(line: u64, detail: impl Into<String>) -> Error {
    Error::corrupt("LVM metadata text", Location::Entry(line), detail)
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'-' | b'.')
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while let Some(&c) = self.s.get(self.at) {
            if c == b'#' {
                while self.s.get(self.at).is_some_and(|&c| c != b'\n') {
                    self.at += 1;
                }
            } else if c.is_ascii_whitespace() {
                if c == b'\n' {
                    self.line += 1;
                }
                self.at += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.at).copied()
    }

    fn count(&mut self) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(self.line, format!("more than {MAX_NODES} entries")));
        }
        Ok(())
    }

    fn name(&mut self) -> Result<String> {
        let start = self.at;
        while self.s.get(self.at).copied().is_some_and(is_name_byte) {
            self.at += 1;
            if self.at - start > MAX_NAME {
                return Err(err(
                    self.line,
                    format!("a name longer than {MAX_NAME} bytes"),
                ));
            }
        }
        if start == self.at {
            let what = match self.s.get(self.at) {
                Some(c) => format!("unexpected {:?}", *c as char),
                None => "unexpected end of text".into(),
            };
            return Err(err(self.line, format!("{what} where a name should be")));
        }
        // The bytes are ASCII by construction.
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    fn section(&mut self, depth: usize, top: bool) -> Result<Section> {
        if depth > MAX_DEPTH {
            return Err(err(
                self.line,
                format!("sections nested more than {MAX_DEPTH} deep"),
            ));
        }
        let mut sec = Section::default();
        loop {
            match self.peek() {
                None if top => return Ok(sec),
                None => return Err(err(self.line, "a section is not closed")),
                Some(b'}') if !top => {
                    self.at += 1;
                    return Ok(sec);
                }
                Some(_) => {}
            }
            self.count()?;
            let key = self.name()?;
            match self.peek() {
                Some(b'{') => {
                    self.at += 1;
                    let inner = self.section(depth + 1, false)?;
                    sec.items.push((key, Item::Section(inner)));
                }
                Some(b'=') => {
                    self.at += 1;
                    let v = self.value(true)?;
                    sec.items.push((key, Item::Value(v)));
                }
                _ => {
                    return Err(err(
                        self.line,
                        format!("{key:?} is followed by neither '=' nor '{{'"),
                    ))
                }
            }
        }
    }

    fn value(&mut self, array_allowed: bool) -> Result<Value> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'[') if array_allowed => {
                self.at += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    self.count()?;
                    items.push(self.value(false)?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => {
                            return Err(err(
                                self.line,
                                "an array element is followed by neither ',' nor ']'",
                            ))
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.' => self.number(),
            Some(c) => Err(err(
                self.line,
                format!("unexpected {:?} where a value should be", c as char),
            )),
            None => Err(err(self.line, "the text ends where a value should be")),
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.at;
        if matches!(self.s[self.at], b'-' | b'+') {
            self.at += 1;
        }
        let mut float = false;
        while let Some(&c) = self.s.get(self.at) {
            if c.is_ascii_digit() {
                self.at += 1;
            } else if c == b'.' && !float {
                float = true;
                self.at += 1;
            } else {
                break;
            }
            if self.at - start > 32 {
                return Err(err(self.line, "a number longer than 32 digits"));
            }
        }
        let t = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
        if self.s.get(self.at).copied().is_some_and(is_name_byte) {
            return Err(err(
                self.line,
                format!("a bare word starting {t:?} (values must be quoted)"),
            ));
        }
        if float {
            if t.parse::<f64>().is_err() {
                return Err(err(self.line, format!("{t:?} is not a number")));
            }
            return Ok(Value::Float(t.to_string()));
        }
        t.parse::<i64>()
            .map(Value::Int)
            .map_err(|_| err(self.line, format!("{t:?} is not a 64-bit integer")))
    }

    fn string(&mut self) -> Result<Value> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.at) else {
                return Err(err(self.line, "a string is not closed"));
            };
            self.at += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&n) = self.s.get(self.at) else {
                        return Err(err(self.line, "a string is not closed"));
                    };
                    self.at += 1;
                    if n == 0 {
                        // An escaped NUL is still a NUL: no writer could quote it back.
                        return Err(err(self.line, "a NUL byte inside a string"));
                    }
                    out.push(n);
                }
                0 => return Err(err(self.line, "a NUL byte inside a string")),
                b'\n' => {
                    self.line += 1;
                    out.push(c);
                }
                _ => out.push(c),
            }
            if out.len() > MAX_STRING {
                return Err(err(
                    self.line,
                    format!("a string longer than {MAX_STRING} bytes"),
                ));
            }
        }
        String::from_utf8(out)
            .map(Value::Str)
            .map_err(|_| err(self.line, "a string that is not UTF-8"))
    }
}

/// Parses a whole metadata text (the top level is an implicit section).
pub fn parse(text: &[u8]) -> Result<Section> {
    let mut p = Parser {
        s: text,
        at: 0,
        line: 1,
        nodes: 0,
    };
    p.section(0, true)
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(f),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, x);
            }
            out.push(']');
        }
    }
}

fn write_section(out: &mut String, s: &Section, depth: usize) {
    for (k, item) in &s.items {
        for _ in 0..depth {
            out.push('\t');
        }
        out.push_str(k);
        match item {
            Item::Value(v) => {
                out.push_str(" = ");
                write_value(out, v);
                out.push('\n');
            }
            Item::Section(inner) => {
                out.push_str(" {\n");
                write_section(out, inner, depth + 1);
                for _ in 0..depth {
                    out.push('\t');
                }
                out.push_str("}\n");
            }
        }
    }
}

/// Prints a tree in lvm2's layout (tab-indented, one entry a line).
pub fn write(s: &Section) -> String {
    let mut out = String::new();
    write_section(&mut out, s, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"rocky {
id = "dry2Dx-P6mH-npNR-EHDj-Hi5U-vnQk-QlRviy"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192
physical_volumes {

pv0 {
id = "traF6c-pQtv-eyOE-02x2-ouvi-4aas-DS2dkd"
device = "/dev/vda3"	# Hint only
dev_size = 131072
pe_start = 2048
pe_count = 15
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
description = "a \"quoted\" word"
creation_time = 1796316644	# Thu Dec  3
"#;

    #[test]
    fn parses_and_writes_back() {
        let t = parse(SAMPLE.as_bytes()).unwrap();
        let vg = t.section("rocky").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert_eq!(vg.strings("status"), ["RESIZEABLE", "READ", "WRITE"]);
        let pv = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv.str("device"), Some("/dev/vda3"));
        assert_eq!(t.str("description"), Some("a \"quoted\" word"));
        let again = parse(write(&t).as_bytes()).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn rejects_what_lvm2_does_not_write() {
        for bad in [
            "a = b",
            "a = 'x'",
            "a = [[1]]",
            "a {",
            "a = \"x",
            "a = 12abc",
            "= 1",
            "a b",
            "a = 99999999999999999999",
            "}",
        ] {
            assert_eq!(
                parse(bad.as_bytes()).unwrap_err().kind(),
                crate::ErrorKind::Corrupt,
                "{bad}"
            );
        }
        let deep = "a {".repeat(MAX_DEPTH + 2) + &"}".repeat(MAX_DEPTH + 2);
        assert!(parse(deep.as_bytes()).is_err());
        let deep_ok = "a {".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
        assert!(parse(deep_ok.as_bytes()).is_ok());
    }
}
