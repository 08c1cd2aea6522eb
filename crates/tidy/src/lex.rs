//! Rust source as tokens, with the line each starts on, so a rule can tell a comment from a
//! string literal from code exactly as the compiler does.

use ra_ap_rustc_lexer::{tokenize, FrontmatterAllowed, LiteralKind, TokenKind};

/// One token of a Rust source file.
#[derive(Clone, Copy, Debug)]
pub struct Token<'a> {
    /// What the lexer says it is.
    pub kind: TokenKind,
    /// Its text in the source.
    pub text: &'a str,
    /// 1-based line it starts on.
    pub line: usize,
}

impl Token<'_> {
    /// A line or block comment, doc comments included.
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, TokenKind::LineComment { .. } | TokenKind::BlockComment { .. })
    }

    /// Whitespace or a comment: nothing the compiler acts on.
    pub fn is_trivia(&self) -> bool {
        self.kind == TokenKind::Whitespace || self.is_comment()
    }

    /// An identifier (raw identifiers included) equal to `name`.
    pub fn is_ident(&self, name: &str) -> bool {
        match self.kind {
            TokenKind::Ident => self.text == name,
            TokenKind::RawIdent => self.text.strip_prefix("r#") == Some(name),
            _ => false,
        }
    }

    /// The contents of a string literal of any flavour (plain, byte, C, raw), without its
    /// prefix, hashes and quotes; `None` for every other token. Escapes are left as written.
    pub fn string_content(&self) -> Option<&str> {
        let TokenKind::Literal { kind, suffix_start } = self.kind else { return None };
        match kind {
            LiteralKind::Str { .. }
            | LiteralKind::ByteStr { .. }
            | LiteralKind::CStr { .. }
            | LiteralKind::RawStr { .. }
            | LiteralKind::RawByteStr { .. }
            | LiteralKind::RawCStr { .. } => {}
            _ => return None,
        }
        let body = &self.text[..suffix_start as usize];
        let start = body.find('"')? + 1;
        let end = body.rfind('"')?;
        Some(if end >= start { &body[start..end] } else { "" })
    }
}

/// Splits `src` into tokens (a leading `#!` line is skipped like the compiler does).
pub fn lex(src: &str) -> Vec<Token<'_>> {
    let skip = ra_ap_rustc_lexer::strip_shebang(src).unwrap_or(0);
    let mut line = 1 + src[..skip].matches('\n').count();
    let mut pos = skip;
    let mut out = Vec::new();
    for t in tokenize(&src[skip..], FrontmatterAllowed::No) {
        let text = &src[pos..pos + t.len as usize];
        out.push(Token { kind: t.kind, text, line });
        line += text.matches('\n').count();
        pos += t.len as usize;
    }
    out
}

/// Index of the next token after `i` that is not whitespace or a comment.
pub fn next_code(tokens: &[Token<'_>], i: usize) -> Option<usize> {
    (i + 1..tokens.len()).find(|&j| !tokens[j].is_trivia())
}
