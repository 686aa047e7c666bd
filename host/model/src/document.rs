//! Policy documents as the host handles them: parsed from YAML or JSON (one
//! document, several separated by `---`, or a `kind: List`), identified by
//! kind, namespace and name, and otherwise opaque — what a document means is
//! the business of the network's policy component, which receives each one
//! as a JSON object.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::InvalidRequest;

/// Largest document, as JSON.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most documents one apply may carry.
pub const MAX_DOCUMENTS_PER_APPLY: usize = 1000;
/// Deepest flow nesting (`[`, `{`) a request's documents may have. The YAML
/// parser reads a whole document before its recursion limit applies, at a
/// cost that grows with the square of the depth: 500 KB nested 10^5 deep
/// once took 29 s to refuse. Real policies nest a dozen deep.
pub const MAX_DOCUMENT_DEPTH: usize = 64;
/// Most documents one tenant may hold.
pub const MAX_DOCUMENTS_PER_TENANT: usize = 10_000;

/// What identifies a document within a tenant: kind, namespace, name (the
/// same triple kubectl uses).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocKey {
    /// `kind`, e.g. `NetworkPolicy`.
    pub kind: String,
    /// `metadata.namespace`; empty when the document has none.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One parsed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Its identity.
    pub key: DocKey,
    /// The whole document as compact JSON.
    pub body: String,
}

/// A stored document of a tenant, with the network it was applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDocument {
    /// Owner.
    pub tenant: String,
    /// The network it applies to; empty: every network of the tenant whose
    /// policy component takes documents.
    pub network: String,
    /// The document.
    pub doc: Document,
}

impl StoredDocument {
    /// The store key: tenant, kind, namespace, name.
    pub fn store_key(&self) -> String {
        store_key(&self.tenant, &self.doc.key)
    }
}

/// The store key of a tenant's document.
pub fn store_key(tenant: &str, key: &DocKey) -> String {
    format!("{tenant}\u{0}{}\u{0}{}\u{0}{}", key.kind, key.namespace, key.name)
}

/// What can be refused of documents `text` without parsing them, in one
/// linear pass: nesting deeper than [`MAX_DOCUMENT_DEPTH`]. The controller
/// runs it before taking any lock.
pub fn precheck(field: &str, text: &str) -> Result<(), InvalidRequest> {
    let depth = flow_depth(text);
    if depth > MAX_DOCUMENT_DEPTH {
        return Err(InvalidRequest::new(
            field,
            format!("nests [ and {{ {depth} deep; at most {MAX_DOCUMENT_DEPTH} (refused before parsing)"),
        ));
    }
    Ok(())
}

/// The deepest flow nesting in `text`, in one linear pass, as the YAML
/// scanner will see it — or deeper. A quote counts as opening a quoted
/// scalar only where the parser would start one (after `[`, `{`, `,` or a
/// line's indentation, or after whitespace following `:`, or following a
/// `-`/`?` that stands alone), a `#` as a comment only after whitespace: so
/// nothing written hides from this count brackets the parser would nest.
/// Brackets it cannot tell apart (in block scalars, after tags) count too.
fn flow_depth(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    // The last byte that was not a space or tab (b'\n' at a line's start),
    // the one before it, and whether whitespace followed it.
    let (mut last, mut before, mut spaced) = (b'\n', b'\n', false);
    while i < b.len() {
        let c = b[i];
        let opens = match last {
            b'\n' | b'[' | b'{' | b',' => true,
            b':' => spaced,
            b'-' | b'?' => spaced && matches!(before, b'\n' | b' ' | b'\t' | b'[' | b'{' | b','),
            _ => false,
        };
        match c {
            b'"' | b'\'' if opens => {
                // A quoted scalar: skip to its end (escapes: \x in "", '' in '').
                i += 1;
                while i < b.len() {
                    if c == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if c == b'\'' && b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'#' if spaced || last == b'\n' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == b' ' || c == b'\t' {
            spaced = true;
        } else {
            (before, last, spaced) = (if spaced { b' ' } else { last }, c, false);
        }
        i += 1;
    }
    max
}

/// Parse `text` (YAML or JSON; several documents separated by `---`; a
/// `kind: List` is unpacked) into documents. `field` names the request field
/// in errors. Empty documents are skipped; an input with none is an error.
pub fn parse(field: &str, text: &str) -> Result<Vec<Document>, InvalidRequest> {
    precheck(field, text)?;
    let mut values = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de)
            .map_err(|e| InvalidRequest::new(field, format!("document {}: not valid YAML or JSON: {e}", i + 1)))?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = m.get("items").and_then(Value::as_array).ok_or_else(|| {
                    InvalidRequest::new(field, format!("document {}: a List needs an `items` array", i + 1))
                })?;
                values.extend(items.iter().cloned());
            }
            other => values.push(other),
        }
    }
    if values.is_empty() {
        return Err(InvalidRequest::new(field, "holds no documents"));
    }
    if values.len() > MAX_DOCUMENTS_PER_APPLY {
        return Err(InvalidRequest::new(
            field,
            format!("holds {} documents (at most {MAX_DOCUMENTS_PER_APPLY})", values.len()),
        ));
    }
    let mut out: Vec<Document> = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let doc = document(&v).map_err(|why| InvalidRequest::new(format!("{field}[{i}]"), why))?;
        if let Some(dup) = out.iter().find(|d| d.key == doc.key) {
            return Err(InvalidRequest::new(format!("{field}[{i}]"), format!("{} appears twice", dup.key)));
        }
        out.push(doc);
    }
    Ok(out)
}

/// One value as a document: an object with `kind` and `metadata.name`.
fn document(v: &Value) -> Result<Document, String> {
    let obj = v.as_object().ok_or("is not an object (a mapping with kind and metadata)")?;
    let kind = obj.get("kind").and_then(Value::as_str).ok_or("has no `kind`")?;
    if kind.is_empty() || kind.len() > 63 || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("kind {kind:?} must be 1 to 63 letters and digits"));
    }
    let meta = obj.get("metadata").and_then(Value::as_object).ok_or("has no `metadata`")?;
    let name = meta.get("name").and_then(Value::as_str).ok_or("has no `metadata.name`")?;
    check_name("metadata.name", name, 253)?;
    let namespace = match meta.get("namespace") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => {
            check_name("metadata.namespace", s, 63)?;
            s.as_str()
        }
        Some(_) => return Err("metadata.namespace must be a string".into()),
    };
    let body = serde_json::to_string(v).map_err(|e| e.to_string())?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("{kind} {name} is {} bytes as JSON (at most {MAX_DOCUMENT_BYTES})", body.len()));
    }
    Ok(Document { key: DocKey { kind: kind.to_owned(), namespace: namespace.to_owned(), name: name.to_owned() }, body })
}

/// A Kubernetes-style object name: lowercase letters, digits, `-` and `.`,
/// starting and ending with a letter or digit.
fn check_name(field: &str, s: &str, max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} {s:?} must be 1 to {max} lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;
