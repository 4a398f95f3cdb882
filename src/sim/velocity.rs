//! The part of Apache Velocity that Genesys data action templates use: references
//! `${a.b}` / `$a.b` (quiet `$!{a.b}` renders nothing when undefined; an undefined loud reference
//! renders as written, as Velocity does), and the tool calls `$esc.jsonString(..)`,
//! `$esc.url(..)` and `$successTemplateUtils.firstFromArray(..)` with reference, quoted-string
//! or literal arguments. Directives (`#set`, `#if`, `#foreach`) are not interpreted and render as
//! written. A `$` that does not start a well-formed reference (`$5`, an unclosed `$x(`) renders
//! as written and rendering goes on with the next character.
//!
//! The simulator runs inside the sandbox gateway, so a template — which anyone holding the
//! simulator's public client credentials can write — must neither overflow the stack nor run
//! away:
//! - references nested inside arguments go at most [`MAX_DEPTH`] levels deep; deeper is a
//!   [`TemplateError`] (the caller answers Genesys' `ACTION.PROCESSING`);
//! - scanning is linear in the template: the outcome of parsing a reference, or an argument list
//!   from a given position, is computed once and remembered, so a `$` that turns out not to
//!   start a reference does not make the text after it be parsed again for every `$`;
//! - all the text one rendering produces (resolved values, tool results, arguments) is capped at
//!   [`MAX_OUTPUT`] bytes (nested `$esc.jsonString` doubles the backslashes at every level).

use std::collections::HashMap;
use std::rc::Rc;

/// How deep references may nest inside the arguments of tool calls.
pub(crate) const MAX_DEPTH: usize = 32;
/// Most text (in bytes) one rendering may produce.
pub(crate) const MAX_OUTPUT: usize = 64 * 1024 * 1024;

/// Why a template could not be rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// References nest deeper than [`MAX_DEPTH`].
    #[error("the template nests references more than {MAX_DEPTH} levels deep")]
    TooDeep,
    /// The rendering would produce more than [`MAX_OUTPUT`] bytes.
    #[error("the template renders to more than {MAX_OUTPUT} bytes")]
    TooLarge,
}

/// Looks up references while rendering.
pub(crate) trait Resolve {
    /// The text of the reference `path` (`["input", "userId"]`), `None` when undefined.
    fn resolve(&self, path: &[String]) -> Option<String>;
}

/// Renders `template` against `ctx`.
///
/// # Errors
/// [`TemplateError`] when the template nests too deep or renders too much.
pub(crate) fn render(template: &str, ctx: &dyn Resolve) -> Result<String, TemplateError> {
    Renderer::new(template, ctx).run()
}

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// For each index of `chars` (and one past the end), the first index at or after it holding a
/// char for which `hit` holds; `chars.len()` when there is none.
fn next_index(chars: &[char], hit: impl Fn(char) -> bool) -> Vec<usize> {
    let mut next = vec![chars.len(); chars.len() + 1];
    for i in (0..chars.len()).rev() {
        next[i] = if hit(chars[i]) { i } else { next[i + 1] };
    }
    next
}

/// A reference that parsed: where it ends and what it renders to.
#[derive(Debug)]
struct Reference {
    /// The index just past the reference.
    end: usize,
    /// The rendered text (as written when undefined and loud).
    text: Rc<str>,
    /// Whether, as an argument, it has a value (defined, or quiet and rendering nothing).
    defined: bool,
}

/// One argument of a tool call.
#[derive(Debug)]
enum Arg {
    /// A rendered reference or quoted string.
    Text(Rc<str>),
    /// An undefined, loud reference.
    Undefined,
    /// An unquoted literal: the template's chars `[start, end)`, trimmed and copied only when a
    /// call reads it.
    Literal(usize, usize),
}

/// An argument list from one argument on. Lists are persistent: argument lists that end alike
/// (a `$` inside an unquoted argument of another call) share their tail.
#[derive(Debug)]
struct Args {
    arg: Arg,
    next: Option<Rc<Args>>,
}

/// A parsed argument list from some argument on and the index just past its `)`, or `None` when
/// it does not parse.
type Tail = Option<(Rc<Args>, usize)>;

/// A parsed argument list (`None` for `()`) and the index just past its `)`, or `None` when it
/// does not parse.
type ArgList = Option<(Option<Rc<Args>>, usize)>;

/// One rendering. `bound` arguments say where the text being parsed ends: the template's length,
/// or the closing quote of the double-quoted argument being rendered (double quotes do not nest,
/// so a position has at most these two bounds, and parse results are remembered per position and
/// bound).
struct Renderer<'a> {
    chars: Vec<char>,
    ctx: &'a dyn Resolve,
    next_double: Vec<usize>,
    next_single: Vec<usize>,
    /// The next `,` or `)`: where an unquoted argument ends.
    next_delimiter: Vec<usize>,
    references: HashMap<(usize, usize), Option<Rc<Reference>>>,
    tails: HashMap<(usize, usize), Tail>,
    depth: usize,
    produced: usize,
    /// Characters and arguments visited (the tests check that scanning stays linear).
    steps: usize,
}

impl<'a> Renderer<'a> {
    fn new(template: &str, ctx: &'a dyn Resolve) -> Self {
        let chars: Vec<char> = template.chars().collect();
        Self {
            next_double: next_index(&chars, |c| c == '"'),
            next_single: next_index(&chars, |c| c == '\''),
            next_delimiter: next_index(&chars, |c| c == ',' || c == ')'),
            chars,
            ctx,
            references: HashMap::new(),
            tails: HashMap::new(),
            depth: 0,
            produced: 0,
            steps: 0,
        }
    }

    fn run(&mut self) -> Result<String, TemplateError> {
        self.text(0, self.chars.len())
    }

    /// The char at `i` when `i` lies before `bound`.
    fn at(&self, i: usize, bound: usize) -> Option<char> {
        if i < bound {
            self.chars.get(i).copied()
        } else {
            None
        }
    }

    fn skip_whitespace(&mut self, mut i: usize, bound: usize) -> usize {
        while self.at(i, bound).is_some_and(char::is_whitespace) {
            i += 1;
            self.steps += 1;
        }
        i
    }

    /// Fails when `bytes` more would exceed [`MAX_OUTPUT`].
    fn check(&self, bytes: usize) -> Result<(), TemplateError> {
        if self.produced.saturating_add(bytes) > MAX_OUTPUT {
            Err(TemplateError::TooLarge)
        } else {
            Ok(())
        }
    }

    /// Counts `bytes` of produced text.
    fn produce(&mut self, bytes: usize) -> Result<(), TemplateError> {
        self.check(bytes)?;
        self.produced += bytes;
        Ok(())
    }

    /// Renders the text `[from, bound)`.
    fn text(&mut self, from: usize, bound: usize) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(bound - from);
        let mut i = from;
        while i < bound {
            self.steps += 1;
            let c = self.chars[i];
            if c == '$'
                && let Some(reference) = self.reference(i, bound)?
            {
                out.push_str(&reference.text);
                i = reference.end;
                continue;
            }
            out.push(c);
            i += 1;
        }
        Ok(out)
    }

    /// The reference starting at `at` (a `$`), or `None` when `$` does not start one there.
    fn reference(
        &mut self,
        at: usize,
        bound: usize,
    ) -> Result<Option<Rc<Reference>>, TemplateError> {
        if let Some(known) = self.references.get(&(at, bound)) {
            return Ok(known.clone());
        }
        if self.depth >= MAX_DEPTH {
            return Err(TemplateError::TooDeep);
        }
        self.depth += 1;
        let parsed = self.parse_reference(at, bound);
        self.depth -= 1;
        let parsed = parsed?.map(Rc::new);
        self.references.insert((at, bound), parsed.clone());
        Ok(parsed)
    }

    fn parse_reference(
        &mut self,
        at: usize,
        bound: usize,
    ) -> Result<Option<Reference>, TemplateError> {
        let mut j = at + 1;
        let quiet = self.at(j, bound) == Some('!');
        if quiet {
            j += 1;
        }
        let braced = self.at(j, bound) == Some('{');
        if braced {
            j += 1;
        }
        let mut segments = Vec::new();
        loop {
            let start = j;
            if !self.at(j, bound).is_some_and(ident_start) {
                return Ok(None);
            }
            while self.at(j, bound).is_some_and(ident_char) {
                j += 1;
                self.steps += 1;
            }
            segments.push(self.chars[start..j].iter().collect::<String>());
            if self.at(j, bound) == Some('.') && self.at(j + 1, bound).is_some_and(ident_start) {
                j += 1;
            } else {
                break;
            }
        }
        let mut args = None;
        if self.at(j, bound) == Some('(') {
            let Some((list, end)) = self.arguments(j, bound)? else {
                return Ok(None);
            };
            args = Some(list);
            j = end;
        }
        if braced {
            if self.at(j, bound) != Some('}') {
                return Ok(None);
            }
            j += 1;
        }
        let value = match args {
            Some(list) => self.call(&segments, list.as_deref())?,
            None => {
                let value = self.ctx.resolve(&segments);
                self.produce(value.as_ref().map_or(0, String::len))?;
                value
            }
        };
        let defined = value.is_some() || quiet;
        let text: Rc<str> = match value {
            Some(v) => v.into(),
            None if quiet => "".into(),
            None => {
                let written: String = self.chars[at..j].iter().collect();
                self.produce(written.len())?;
                written.into()
            }
        };
        Ok(Some(Reference {
            end: j,
            text,
            defined,
        }))
    }

    /// Parses `( arg, ... )` from the `(` at `open`: the list (`None` for `()`) and the index
    /// just past `)`, or `None` when it does not parse.
    fn arguments(&mut self, open: usize, bound: usize) -> Result<ArgList, TemplateError> {
        let first = self.skip_whitespace(open + 1, bound);
        if self.at(first, bound) == Some(')') {
            return Ok(Some((None, first + 1)));
        }
        Ok(self
            .tail(open + 1, bound)?
            .map(|(list, end)| (Some(list), end)))
    }

    /// Parses `arg ( , arg )* )` from `from` (just past a `(` or `,`), iteratively (a long
    /// argument list costs no stack), remembering the outcome for every argument it passes.
    fn tail(&mut self, from: usize, bound: usize) -> Result<Tail, TemplateError> {
        let mut pending: Vec<(usize, Arg)> = Vec::new();
        let mut at = from;
        let outcome = loop {
            if let Some(known) = self.tails.get(&(at, bound)) {
                break known.clone().map(|(list, end)| (Some(list), end));
            }
            self.steps += 1;
            let Some((arg, after)) = self.argument(at, bound)? else {
                self.tails.insert((at, bound), None);
                break None;
            };
            let next = self.skip_whitespace(after, bound);
            match self.at(next, bound) {
                Some(',') => {
                    pending.push((at, arg));
                    at = next + 1;
                }
                Some(')') => {
                    pending.push((at, arg));
                    break Some((None, next + 1));
                }
                _ => {
                    self.tails.insert((at, bound), None);
                    break None;
                }
            }
        };
        let Some((mut list, end)) = outcome else {
            for (start, _) in pending {
                self.tails.insert((start, bound), None);
            }
            return Ok(None);
        };
        for (start, arg) in pending.into_iter().rev() {
            let node = Rc::new(Args { arg, next: list });
            self.tails.insert((start, bound), Some((node.clone(), end)));
            list = Some(node);
        }
        Ok(list.map(|list| (list, end)))
    }

    /// Parses one argument after optional whitespace from `from`: the argument and the index
    /// just past it.
    fn argument(
        &mut self,
        from: usize,
        bound: usize,
    ) -> Result<Option<(Arg, usize)>, TemplateError> {
        let at = self.skip_whitespace(from, bound);
        let Some(c) = self.at(at, bound) else {
            return Ok(None);
        };
        match c {
            '"' | '\'' => {
                let close = if c == '"' {
                    self.next_double[at + 1]
                } else {
                    self.next_single[at + 1]
                };
                if close >= bound {
                    return Ok(None);
                }
                let text = if c == '"' {
                    self.text(at + 1, close)?
                } else {
                    self.steps += close - at;
                    self.chars[at + 1..close].iter().collect()
                };
                self.produce(text.len())?;
                Ok(Some((Arg::Text(text.into()), close + 1)))
            }
            '$' => Ok(self.reference(at, bound)?.map(|r| {
                let arg = if r.defined {
                    Arg::Text(r.text.clone())
                } else {
                    Arg::Undefined
                };
                (arg, r.end)
            })),
            _ => {
                let end = self.next_delimiter[at];
                if end >= bound {
                    return Ok(None);
                }
                Ok(Some((Arg::Literal(at, end), end)))
            }
        }
    }

    /// The value of an argument (`None` for an undefined reference).
    fn value(&mut self, arg: Option<&Args>) -> Result<Option<Rc<str>>, TemplateError> {
        match arg.map(|a| &a.arg) {
            None | Some(Arg::Undefined) => Ok(None),
            Some(Arg::Text(text)) => Ok(Some(text.clone())),
            Some(&Arg::Literal(start, end)) => {
                let raw: String = self.chars[start..end].iter().collect();
                let text = raw.trim();
                self.produce(text.len())?;
                Ok(Some(text.into()))
            }
        }
    }

    /// Runs the tool call `segments(args)`; `None` when the tool is unknown or its argument is
    /// undefined.
    fn call(
        &mut self,
        segments: &[String],
        args: Option<&Args>,
    ) -> Result<Option<String>, TemplateError> {
        let result = match segments.join(".").as_str() {
            "esc.jsonString" | "esc.javascript" => {
                let Some(first) = self.value(args)? else {
                    return Ok(None);
                };
                // At most `\u00XX` (6 bytes) per byte.
                self.check(first.len().saturating_mul(6))?;
                let Ok(quoted) = serde_json::to_string(&*first) else {
                    return Ok(None);
                };
                quoted[1..quoted.len() - 1].to_owned()
            }
            "esc.url" => {
                let Some(first) = self.value(args)? else {
                    return Ok(None);
                };
                // At most `%XX` (3 bytes) per byte.
                self.check(first.len().saturating_mul(3))?;
                form_urlencoded::byte_serialize(first.as_bytes()).collect()
            }
            "successTemplateUtils.firstFromArray" => {
                let Some(first) = self.value(args)? else {
                    return Ok(None);
                };
                let second = args.and_then(|a| a.next.as_deref());
                let fallback = self.value(second)?;
                self.check(first.len() + fallback.as_ref().map_or(0, |f| f.len()))?;
                match serde_json::from_str::<serde_json::Value>(&first) {
                    Ok(serde_json::Value::Array(items)) if !items.is_empty() => {
                        items[0].to_string()
                    }
                    _ => fallback.map(|f| f.to_string()).unwrap_or_default(),
                }
            }
            _ => return Ok(None),
        };
        self.produce(result.len())?;
        Ok(Some(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug)]
    struct Map(Vec<(String, String)>);

    impl Resolve for Map {
        fn resolve(&self, path: &[String]) -> Option<String> {
            let key = path.join(".");
            self.0
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        }
    }

    fn map(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect())
    }

    fn ctx() -> Map {
        map(&[
            ("input.name", "Jane \"J\" Doe"),
            ("input.id", "a b/c"),
            ("arr", "[\"x\",\"y\"]"),
        ])
    }

    fn ok(template: &str, ctx: &dyn Resolve) -> String {
        render(template, ctx).expect("renders")
    }

    /// The rendering and the number of steps it took.
    fn counted(template: &str, ctx: &dyn Resolve) -> (Result<String, TemplateError>, usize) {
        let mut renderer = Renderer::new(template, ctx);
        let out = renderer.run();
        (out, renderer.steps)
    }

    #[test]
    fn references_render_their_value_or_stay_as_written() {
        let c = ctx();
        assert_eq!(ok("/users/${input.id}/x", &c), "/users/a b/c/x");
        assert_eq!(ok("$input.id.", &c), "a b/c.");
        assert_eq!(
            ok("${input.missing}|$!{input.missing}|$input.missing", &c),
            "${input.missing}||$input.missing"
        );
        assert_eq!(ok("cost: $5 and ${", &c), "cost: $5 and ${");
    }

    #[test]
    fn escape_tools_encode_their_argument() {
        let c = ctx();
        assert_eq!(
            ok("{\"n\": \"$esc.jsonString(${input.name})\"}", &c),
            "{\"n\": \"Jane \\\"J\\\" Doe\"}"
        );
        assert_eq!(ok("/u/$esc.url(${input.id})", &c), "/u/a+b%2Fc");
        assert_eq!(ok("${esc.url($input.id)}", &c), "a+b%2Fc");
        assert_eq!(ok("$esc.url(\"x ${input.id}\")", &c), "x+a+b%2Fc");
        assert_eq!(
            ok(
                "$successTemplateUtils.firstFromArray(\"${arr}\", \"null\")",
                &c
            ),
            "\"x\""
        );
        assert_eq!(
            ok("$successTemplateUtils.firstFromArray(\"[]\", \"null\")", &c),
            "null"
        );
        assert_eq!(
            ok("$esc.url(${input.missing})", &c),
            "$esc.url(${input.missing})"
        );
    }

    #[test]
    fn a_reference_that_does_not_close_renders_as_written_and_what_follows_renders() {
        let c = ctx();
        assert_eq!(ok("$esc.url(${input.id}", &c), "$esc.url(a b/c");
        assert_eq!(ok("${esc.url($input.id)", &c), "${esc.url(a b/c)");
        assert_eq!(ok("$esc.url('x, ${input.id}", &c), "$esc.url('x, a b/c");
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
        let c = ctx();
        let nested = |levels: usize| {
            format!(
                "{}${{input.id}}{}",
                "$esc.url(".repeat(levels),
                ")".repeat(levels)
            )
        };
        // The outermost reference and MAX_DEPTH - 1 levels inside it.
        assert!(render(&nested(MAX_DEPTH - 1), &c).is_ok());
        assert_eq!(render(&nested(MAX_DEPTH), &c), Err(TemplateError::TooDeep));
        assert_eq!(
            render(&"$a($a(".repeat(100_000), &c),
            Err(TemplateError::TooDeep)
        );
        assert_eq!(
            render(&"${esc.url(".repeat(100_000), &c),
            Err(TemplateError::TooDeep)
        );
    }

    #[test]
    fn output_that_grows_with_every_level_is_capped() {
        // Every `$esc.jsonString` level doubles the backslashes: 2^30 bytes unless capped.
        let c = map(&[("input.q", "\"\\")]);
        let template = format!(
            "{}${{input.q}}{}",
            "$esc.jsonString(".repeat(30),
            ")".repeat(30)
        );
        assert_eq!(render(&template, &c), Err(TemplateError::TooLarge));
        let template = format!(
            "{}${{input.q}}{}",
            "$esc.jsonString(".repeat(5),
            ")".repeat(5)
        );
        let mut expected = "\"\\".to_owned();
        for _ in 0..5 {
            let quoted = serde_json::to_string(&expected).unwrap();
            expected = quoted[1..quoted.len() - 1].to_owned();
        }
        assert_eq!(ok(&template, &c), expected);
    }

    /// Templates that make a backtracking scanner quadratic.
    fn adversarial(n: usize) -> Vec<String> {
        vec![
            "$x(a".repeat(n / 4),
            "$x(\"".repeat(n / 4),
            "$x('".repeat(n / 4),
            "$x( ".repeat(n / 4),
            format!("{}{}", "$x(a".repeat(n / 8), ",1".repeat(n / 4)),
            format!("{}{}", "${x(a".repeat(n / 10), ", \"$y\"".repeat(n / 12)),
            format!("$x({}", "$y, ".repeat(n / 4)),
            format!("{}{}", "$a(".repeat(20), " ".repeat(n)),
            "${a.b.c".repeat(n / 7),
        ]
    }

    #[test]
    fn scanning_is_linear_in_the_template() {
        let c = ctx();
        for n in [1_000, 10_000, 100_000] {
            for template in adversarial(n) {
                let chars = template.chars().count();
                let (out, steps) = counted(&template, &c);
                // `$x( $x( ...` nests: an error, found as fast.
                assert!(
                    out.is_ok() || template.starts_with("$x( "),
                    "{:?}",
                    out.err()
                );
                assert!(
                    steps <= 8 * (chars + 1),
                    "{steps} steps for {chars} chars: {}",
                    &template[..40]
                );
            }
        }
    }

    /// The previous, backtracking renderer: the reference semantics for small templates.
    mod naive {
        use super::super::Resolve;

        pub fn render(template: &str, ctx: &dyn Resolve) -> String {
            let chars: Vec<char> = template.chars().collect();
            let mut out = String::new();
            let mut i = 0;
            while i < chars.len() {
                if chars[i] == '$'
                    && let Some((text, used)) = reference(&chars[i..], ctx)
                {
                    out.push_str(&text);
                    i += used;
                    continue;
                }
                out.push(chars[i]);
                i += 1;
            }
            out
        }

        fn reference(s: &[char], ctx: &dyn Resolve) -> Option<(String, usize)> {
            let mut j = 1;
            let quiet = s.get(j) == Some(&'!');
            if quiet {
                j += 1;
            }
            let braced = s.get(j) == Some(&'{');
            if braced {
                j += 1;
            }
            let mut segments = Vec::new();
            loop {
                let start = j;
                if !s.get(j).copied().is_some_and(super::super::ident_start) {
                    return None;
                }
                while s.get(j).copied().is_some_and(super::super::ident_char) {
                    j += 1;
                }
                segments.push(s[start..j].iter().collect::<String>());
                if s.get(j) == Some(&'.')
                    && s.get(j + 1).copied().is_some_and(super::super::ident_start)
                {
                    j += 1;
                } else {
                    break;
                }
            }
            let mut args = None;
            if s.get(j) == Some(&'(') {
                let (parsed, used) = arguments(&s[j..], ctx)?;
                args = Some(parsed);
                j += used;
            }
            if braced {
                if s.get(j) != Some(&'}') {
                    return None;
                }
                j += 1;
            }
            let value = match args {
                Some(args) => call(&segments, &args),
                None => ctx.resolve(&segments),
            };
            let text = match value {
                Some(v) => v,
                None if quiet => String::new(),
                None => s[..j].iter().collect(),
            };
            Some((text, j))
        }

        fn arguments(s: &[char], ctx: &dyn Resolve) -> Option<(Vec<Option<String>>, usize)> {
            let mut j = 1;
            let mut args = Vec::new();
            loop {
                while s.get(j).is_some_and(|c| c.is_whitespace()) {
                    j += 1;
                }
                match s.get(j)? {
                    ')' if args.is_empty() => return Some((args, j + 1)),
                    '"' | '\'' => {
                        let quote = s[j];
                        let start = j + 1;
                        j = start;
                        while s.get(j)? != &quote {
                            j += 1;
                        }
                        let raw: String = s[start..j].iter().collect();
                        args.push(Some(if quote == '"' { render(&raw, ctx) } else { raw }));
                        j += 1;
                    }
                    '$' => {
                        let (text, used) = reference(&s[j..], ctx)?;
                        let written: String = s[j..j + used].iter().collect();
                        args.push((text != written).then_some(text));
                        j += used;
                    }
                    _ => {
                        let start = j;
                        while s.get(j).is_some_and(|c| *c != ',' && *c != ')') {
                            j += 1;
                        }
                        args.push(Some(
                            s[start..j].iter().collect::<String>().trim().to_owned(),
                        ));
                    }
                }
                while s.get(j).is_some_and(|c| c.is_whitespace()) {
                    j += 1;
                }
                match s.get(j)? {
                    ',' => j += 1,
                    ')' => return Some((args, j + 1)),
                    _ => return None,
                }
            }
        }

        fn call(segments: &[String], args: &[Option<String>]) -> Option<String> {
            let name = segments.join(".");
            let first = args.first().cloned().flatten();
            match name.as_str() {
                "esc.jsonString" | "esc.javascript" => {
                    let text = serde_json::to_string(&first?).ok()?;
                    Some(text[1..text.len() - 1].to_owned())
                }
                "esc.url" => Some(form_urlencoded::byte_serialize(first?.as_bytes()).collect()),
                "successTemplateUtils.firstFromArray" => {
                    let fallback = args.get(1).cloned().flatten();
                    match serde_json::from_str::<serde_json::Value>(&first?) {
                        Ok(serde_json::Value::Array(items)) if !items.is_empty() => {
                            Some(items[0].to_string())
                        }
                        _ => Some(fallback.unwrap_or_default()),
                    }
                }
                _ => None,
            }
        }
    }

    /// Templates built from the pieces of the syntax.
    fn template(pieces: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "$",
                "$!",
                "{",
                "}",
                "(",
                ")",
                ",",
                ".",
                "\"",
                "'",
                " ",
                "a",
                "x",
                "5",
                "é",
                "\\",
                "#set",
                "input",
                "name",
                "arr",
                "esc",
                "url",
                "jsonString",
                "esc.url(",
                "esc.jsonString(",
                "successTemplateUtils.firstFromArray(",
                "${input.name}",
                "$input.id",
                "$!{input.none}",
                "\"[1]\"",
                "'[]'",
            ]),
            pieces,
        )
        .prop_map(|pieces| pieces.concat())
    }

    /// Contexts whose values never start with `$` (the previous renderer took a defined value
    /// equal to its reference's written form for undefined).
    fn context() -> impl Strategy<Value = Map> {
        (
            "[^$]{0,8}",
            "[^$]{0,8}",
            prop::sample::select(vec!["[\"x\",\"y\"]", "[]", "{}", "[[1],2]", "nope"]),
        )
            .prop_map(|(name, id, arr)| {
                map(&[("input.name", &name), ("input.id", &id), ("arr", arr)])
            })
    }

    proptest! {
        #[test]
        fn renders_like_the_backtracking_renderer(template in template(0..16), ctx in context()) {
            prop_assert_eq!(render(&template, &ctx), Ok(naive::render(&template, &ctx)));
        }

        #[test]
        fn rendering_never_panics_and_stays_linear(
            template in prop_oneof![template(0..400), ".{0,400}", "[$a(){},.'\" !]{0,400}"],
            name in ".{0,64}",
        ) {
            let ctx = map(&[("input.name", &name), ("input.id", "1"), ("arr", "[1]")]);
            let (_, steps) = counted(&template, &ctx);
            let chars = template.chars().count();
            prop_assert!(steps <= 16 * (chars + 1), "{} steps for {} chars", steps, chars);
        }
    }
}
