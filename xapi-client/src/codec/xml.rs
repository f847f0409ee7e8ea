//! XML-RPC reader and writer.
//!
//! Reading follows ocaml-rpc's parser, which XAPI uses: untyped text is a
//! string and is never trimmed; `i4`, `int` and `i8` are integers; datetimes
//! are kept as sent. Anything else — a DOCTYPE, unknown entities, a wrong
//! closing tag, nesting deeper than [`MAX_DEPTH`] — is an error, so hostile
//! input costs at most its own size and never a panic.
//!
//! Writing has two encodings: [`Encoding::Request`] types every string (as
//! Python's `xmlrpc.client` does) and sends 64-bit integers as strings, which
//! is what XAPI's docs ask of clients; [`Encoding::Xapi`] writes strings and
//! integers untyped, exactly as XAPI's own replies do. Output is compact: Xen
//! Orchestra's parser rejects whitespace between elements.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::value::Value;

/// The deepest nesting of arrays and structs accepted.
pub const MAX_DEPTH: usize = 64;

/// Malformed or unexpected XML-RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Not well-formed XML, or forbidden XML (a DOCTYPE).
    #[error("malformed XML at byte {position}: {why}")]
    Xml {
        /// Byte offset in the document.
        position: u64,
        /// What is wrong.
        why: String,
    },
    /// Well-formed XML that is not XML-RPC.
    #[error("not XML-RPC: expected {expected}, found {found}")]
    Structure {
        /// What the grammar wanted.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A typed value whose text does not parse.
    #[error("<{tag}> holds {text:?}, which is not a valid {tag}")]
    BadScalar {
        /// The type tag.
        tag: String,
        /// The text (cut short).
        text: String,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("values are nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// How strings and integers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// What a client sends: `<string>` for strings and for 64-bit integers.
    Request,
    /// What XAPI sends: strings and integers as untyped text.
    Xapi,
}

/// A parsed `methodResponse`.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodResponse {
    /// `<params><param><value>…`.
    Value(Value),
    /// `<fault>`: an XML-RPC-level failure (XAPI itself uses envelopes).
    Fault {
        /// `faultCode`.
        code: i64,
        /// `faultString`.
        message: String,
    },
}

/// One lexical item, with whitespace-only text between elements kept so the
/// grammar decides whether it matters.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open(String),
    Close,
    Text(String),
    End,
}

struct Lexer<'a> {
    reader: Reader<&'a [u8]>,
    peeked: Option<Token>,
}

impl<'a> Lexer<'a> {
    fn new(xml: &'a str) -> Self {
        let mut reader = Reader::from_str(xml);
        let config = reader.config_mut();
        config.expand_empty_elements = true;
        config.check_end_names = true;
        config.trim_text(false);
        Self { reader, peeked: None }
    }

    fn error(&self, why: impl std::fmt::Display) -> CodecError {
        CodecError::Xml { position: self.reader.buffer_position(), why: why.to_string() }
    }

    fn raw_next(&mut self) -> Result<Token, CodecError> {
        loop {
            let event = self.reader.read_event().map_err(|e| self.error(e))?;
            return Ok(match event {
                Event::Start(start) => {
                    if start.attributes().next().is_some() {
                        return Err(self.error("XML-RPC elements carry no attributes"));
                    }
                    Token::Open(String::from_utf8_lossy(start.name().as_ref()).into_owned())
                }
                Event::End(_) => Token::Close,
                Event::Text(text) => Token::Text(text.unescape().map_err(|e| self.error(e))?.into_owned()),
                Event::CData(data) => Token::Text(String::from_utf8_lossy(&data).into_owned()),
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) => continue,
                Event::DocType(_) => return Err(self.error("a DOCTYPE is not allowed")),
                Event::Empty(_) => return Err(self.error("unexpected empty element")),
                Event::Eof => Token::End,
            });
        }
    }

    /// The next token, with adjacent text pieces joined.
    fn next(&mut self) -> Result<Token, CodecError> {
        let token = match self.peeked.take() {
            Some(t) => t,
            None => self.raw_next()?,
        };
        let Token::Text(mut text) = token else { return Ok(token) };
        loop {
            match self.raw_next()? {
                Token::Text(more) => text.push_str(&more),
                other => {
                    self.peeked = Some(other);
                    return Ok(Token::Text(text));
                }
            }
        }
    }

    /// The next token that is not whitespace-only text.
    fn next_significant(&mut self) -> Result<Token, CodecError> {
        loop {
            match self.next()? {
                Token::Text(t) if t.trim().is_empty() => {}
                other => return Ok(other),
            }
        }
    }

    fn expect_open(&mut self, name: &'static str) -> Result<(), CodecError> {
        match self.next_significant()? {
            Token::Open(found) if found == name.trim_start_matches('<').trim_end_matches('>') => Ok(()),
            other => Err(unexpected(name, &other)),
        }
    }

    fn expect_close(&mut self, name: &'static str) -> Result<(), CodecError> {
        match self.next_significant()? {
            Token::Close => Ok(()),
            other => Err(unexpected(name, &other)),
        }
    }

    /// The text content of an element whose opening tag was just read.
    fn text_until_close(&mut self, tag: &'static str) -> Result<String, CodecError> {
        match self.next()? {
            Token::Close => Ok(String::new()),
            Token::Text(text) => match self.next()? {
                Token::Close => Ok(text),
                other => Err(unexpected(tag, &other)),
            },
            other => Err(unexpected(tag, &other)),
        }
    }

    fn expect_end(&mut self) -> Result<(), CodecError> {
        match self.next_significant()? {
            Token::End => Ok(()),
            other => Err(unexpected("the end of the document", &other)),
        }
    }

    /// A value whose `<value>` tag was just read.
    fn value_body(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep);
        }
        let first = self.next()?;
        let typed = match first {
            Token::Close => return Ok(Value::String(String::new())),
            Token::Text(text) => match self.next()? {
                Token::Close => return Ok(Value::String(text)),
                Token::Open(tag) if text.trim().is_empty() => tag,
                other => return Err(unexpected("</value>", &other)),
            },
            Token::Open(tag) => tag,
            Token::End => return Err(unexpected("a value", &Token::End)),
        };
        let value = self.typed(&typed, depth)?;
        self.expect_close("</value>")?;
        Ok(value)
    }

    fn typed(&mut self, tag: &str, depth: usize) -> Result<Value, CodecError> {
        let scalar = |lexer: &mut Self, name: &'static str| lexer.text_until_close(name);
        Ok(match tag {
            "string" => Value::String(scalar(self, "</string>")?),
            "i4" | "int" | "i8" => {
                let text = scalar(self, "</int>")?;
                Value::Int(text.trim().parse().map_err(|_| bad(tag, &text))?)
            }
            "boolean" => {
                let text = scalar(self, "</boolean>")?;
                match text.trim() {
                    "1" => Value::Bool(true),
                    "0" => Value::Bool(false),
                    _ => return Err(bad(tag, &text)),
                }
            }
            "double" => {
                let text = scalar(self, "</double>")?;
                Value::Double(parse_double(text.trim()).ok_or_else(|| bad(tag, &text))?)
            }
            "dateTime.iso8601" => Value::DateTime(scalar(self, "</dateTime.iso8601>")?),
            "base64" => Value::Base64(scalar(self, "</base64>")?.split_whitespace().collect()),
            "nil" => {
                self.expect_close("</nil>")?;
                Value::Nil
            }
            "array" => {
                self.expect_open("<data>")?;
                let mut items = Vec::new();
                loop {
                    match self.next_significant()? {
                        Token::Open(t) if t == "value" => items.push(self.value_body(depth + 1)?),
                        Token::Close => break,
                        other => return Err(unexpected("<value> or </data>", &other)),
                    }
                }
                self.expect_close("</array>")?;
                Value::Array(items)
            }
            "struct" => {
                let mut members = BTreeMap::new();
                loop {
                    match self.next_significant()? {
                        Token::Open(t) if t == "member" => {
                            self.expect_open("<name>")?;
                            let name = self.text_until_close("</name>")?;
                            self.expect_open("<value>")?;
                            let value = self.value_body(depth + 1)?;
                            self.expect_close("</member>")?;
                            members.insert(name, value);
                        }
                        Token::Close => break,
                        other => return Err(unexpected("<member> or </struct>", &other)),
                    }
                }
                Value::Struct(members)
            }
            other => return Err(CodecError::Structure { expected: "an XML-RPC type", found: format!("<{other}>") }),
        })
    }
}

/// `inf`, `-inf` and `nan` as ocaml's `%.16g` prints them, and decimals.
fn parse_double(text: &str) -> Option<f64> {
    match text {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" | "-nan" => Some(f64::NAN),
        _ if text.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && !text.is_empty() => text.parse().ok(),
        _ => None,
    }
}

/// Like ocaml's `%.16g`, which XAPI uses: integral values without a
/// fraction, exponents only for very large or small magnitudes; always the
/// shortest text that reads back to the same value.
fn format_double(d: f64) -> String {
    let magnitude = d.abs();
    if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) {
        format!("{d:e}")
    } else {
        format!("{d}")
    }
}

fn bad(tag: &str, text: &str) -> CodecError {
    CodecError::BadScalar { tag: tag.to_owned(), text: text.chars().take(40).collect() }
}

fn unexpected(expected: &'static str, found: &Token) -> CodecError {
    let found = match found {
        Token::Open(tag) => format!("<{tag}>"),
        Token::Close => "a closing tag".to_owned(),
        Token::Text(text) => format!("text {:?}", text.chars().take(40).collect::<String>()),
        Token::End => "the end of the document".to_owned(),
    };
    CodecError::Structure { expected, found }
}

/// Parses a whole `methodResponse`.
///
/// # Errors
/// [`CodecError`] for anything that is not one.
pub fn parse_response(xml: &str) -> Result<MethodResponse, CodecError> {
    let mut lexer = Lexer::new(xml);
    lexer.expect_open("<methodResponse>")?;
    let response = match lexer.next_significant()? {
        Token::Open(tag) if tag == "params" => {
            lexer.expect_open("<param>")?;
            lexer.expect_open("<value>")?;
            let value = lexer.value_body(0)?;
            lexer.expect_close("</param>")?;
            lexer.expect_close("</params>")?;
            MethodResponse::Value(value)
        }
        Token::Open(tag) if tag == "fault" => {
            lexer.expect_open("<value>")?;
            let fault = lexer.value_body(0)?;
            lexer.expect_close("</fault>")?;
            let members = fault
                .as_struct("fault")
                .map_err(|e| CodecError::Structure { expected: "a fault struct", found: e.got })?;
            let code = members.get("faultCode").and_then(|v| v.as_i64("faultCode").ok()).unwrap_or(0);
            let message =
                members.get("faultString").and_then(|v| v.as_str("faultString").ok()).unwrap_or_default().to_owned();
            MethodResponse::Fault { code, message }
        }
        other => return Err(unexpected("<params> or <fault>", &other)),
    };
    lexer.expect_close("</methodResponse>")?;
    lexer.expect_end()?;
    Ok(response)
}

/// Parses a `methodCall` into its method name and parameters.
///
/// # Errors
/// [`CodecError`] for anything that is not one.
pub fn parse_call(xml: &str) -> Result<(String, Vec<Value>), CodecError> {
    let mut lexer = Lexer::new(xml);
    lexer.expect_open("<methodCall>")?;
    lexer.expect_open("<methodName>")?;
    let method = lexer.text_until_close("</methodName>")?.trim().to_owned();
    let mut params = Vec::new();
    match lexer.next_significant()? {
        Token::Open(tag) if tag == "params" => loop {
            match lexer.next_significant()? {
                Token::Open(tag) if tag == "param" => {
                    lexer.expect_open("<value>")?;
                    params.push(lexer.value_body(0)?);
                    lexer.expect_close("</param>")?;
                }
                Token::Close => {
                    lexer.expect_close("</methodCall>")?;
                    break;
                }
                other => return Err(unexpected("<param> or </params>", &other)),
            }
        },
        Token::Close => {}
        other => return Err(unexpected("<params>", &other)),
    }
    lexer.expect_end()?;
    Ok((method, params))
}

/// Parses one `<value>` element, such as the XML fragment XAPI stores in
/// `task.result`.
///
/// # Errors
/// [`CodecError`] for anything that is not exactly one value.
pub fn parse_value(xml: &str) -> Result<Value, CodecError> {
    let mut lexer = Lexer::new(xml);
    lexer.expect_open("<value>")?;
    let value = lexer.value_body(0)?;
    lexer.expect_end()?;
    Ok(value)
}

/// Whether XML 1.0 can carry `c` at all (its `Char` production): not the C0
/// controls but tab, LF and CR, nor U+FFFE and U+FFFF. Not even as a
/// character reference: `&#1;` is as invalid as a raw U+0001, and XAPI's
/// parser (and Xen Orchestra's) rejects the whole document.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Appends `text` with the five XML specials escaped (and `\r`, which XML
/// would otherwise normalise away). A character XML 1.0 cannot carry (a C0
/// control from a device's model string, a log line, a name) becomes U+FFFD:
/// the reply stays valid and says where something was.
fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            c if !xml_char(c) => out.push(char::REPLACEMENT_CHARACTER),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn write_into(out: &mut String, value: &Value, encoding: Encoding) {
    out.push_str("<value>");
    match (value, encoding) {
        (Value::String(s), Encoding::Xapi) => escape(out, s),
        (Value::String(s), Encoding::Request) => {
            out.push_str("<string>");
            escape(out, s);
            out.push_str("</string>");
        }
        (Value::Int(i), Encoding::Xapi) => {
            let _ = write!(out, "{i}");
        }
        (Value::Int(i), Encoding::Request) => {
            let _ = write!(out, "<string>{i}</string>");
        }
        (Value::Bool(b), _) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
        }
        (Value::Double(d), _) => {
            let text = if d.is_nan() {
                "nan".to_owned()
            } else if d.is_infinite() {
                if *d > 0.0 { "inf" } else { "-inf" }.to_owned()
            } else {
                format_double(*d)
            };
            let _ = write!(out, "<double>{text}</double>");
        }
        (Value::DateTime(s), _) => {
            out.push_str("<dateTime.iso8601>");
            escape(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        (Value::Base64(s), _) => {
            out.push_str("<base64>");
            escape(out, s);
            out.push_str("</base64>");
        }
        (Value::Array(items), _) => {
            out.push_str("<array><data>");
            for item in items {
                write_into(out, item, encoding);
            }
            out.push_str("</data></array>");
        }
        (Value::Struct(members), _) => {
            out.push_str("<struct>");
            for (name, member) in members {
                out.push_str("<member><name>");
                escape(out, name);
                out.push_str("</name>");
                write_into(out, member, encoding);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        (Value::Nil, _) => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// One `<value>` element.
#[must_use]
pub fn write_value(value: &Value, encoding: Encoding) -> String {
    let mut out = String::new();
    write_into(&mut out, value, encoding);
    out
}

/// A `methodCall` document, typed as a client sends it.
#[must_use]
pub fn write_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodCall><methodName>");
    escape(&mut out, method);
    out.push_str("</methodName><params>");
    for param in params {
        out.push_str("<param>");
        write_into(&mut out, param, Encoding::Request);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

/// A `methodResponse` document holding `value`.
#[must_use]
pub fn write_response(value: &Value, encoding: Encoding) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodResponse><params><param>");
    write_into(&mut out, value, encoding);
    out.push_str("</param></params></methodResponse>");
    out
}

/// A `methodResponse` fault document.
#[must_use]
pub fn write_fault(code: i64, message: &str) -> String {
    let mut out =
        String::from("<?xml version=\"1.0\"?><methodResponse><fault><value><struct><member><name>faultCode</name>");
    let _ = write!(out, "<value><int>{code}</int></value></member><member><name>faultString</name>");
    write_into(&mut out, &Value::from(message), Encoding::Request);
    out.push_str("</member></struct></value></fault></methodResponse>");
    out
}
