//! The part of Apache Velocity that Genesys data action templates use: references
//! `${a.b}` / `$a.b` (quiet `$!{a.b}` renders nothing when undefined; an undefined loud reference
//! renders as written, as Velocity does), and the tool calls `$esc.jsonString(..)`,
//! `$esc.url(..)` and `$successTemplateUtils.firstFromArray(..)` with reference, quoted-string
//! or literal arguments. Directives (`#set`, `#if`, `#foreach`) are not interpreted and render as
//! written.

/// Looks up references while rendering.
pub(crate) trait Resolve {
    /// The text of the reference `path` (`["input", "userId"]`), `None` when undefined.
    fn resolve(&self, path: &[String]) -> Option<String>;
}

/// Renders `template` against `ctx`.
pub(crate) fn render(template: &str, ctx: &dyn Resolve) -> String {
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len());
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

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Parses the reference at the start of `s` (which starts with `$`): its rendered text and the
/// number of chars it spans, or `None` when `$` does not start a reference.
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
        if !s.get(j).copied().is_some_and(ident_start) {
            return None;
        }
        while s.get(j).copied().is_some_and(ident_char) {
            j += 1;
        }
        segments.push(s[start..j].iter().collect::<String>());
        if s.get(j) == Some(&'.') && s.get(j + 1).copied().is_some_and(ident_start) {
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

/// Parses `( arg, ... )`; an undefined reference argument is `None`.
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Map(Vec<(&'static str, &'static str)>);

    impl Resolve for Map {
        fn resolve(&self, path: &[String]) -> Option<String> {
            let key = path.join(".");
            self.0
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn ctx() -> Map {
        Map(vec![
            ("input.name", "Jane \"J\" Doe"),
            ("input.id", "a b/c"),
            ("arr", "[\"x\",\"y\"]"),
        ])
    }

    #[test]
    fn references_render_their_value_or_stay_as_written() {
        let c = ctx();
        assert_eq!(render("/users/${input.id}/x", &c), "/users/a b/c/x");
        assert_eq!(render("$input.id.", &c), "a b/c.");
        assert_eq!(
            render("${input.missing}|$!{input.missing}|$input.missing", &c),
            "${input.missing}||$input.missing"
        );
        assert_eq!(render("cost: $5 and ${", &c), "cost: $5 and ${");
    }

    #[test]
    fn escape_tools_encode_their_argument() {
        let c = ctx();
        assert_eq!(
            render("{\"n\": \"$esc.jsonString(${input.name})\"}", &c),
            "{\"n\": \"Jane \\\"J\\\" Doe\"}"
        );
        assert_eq!(render("/u/$esc.url(${input.id})", &c), "/u/a+b%2Fc");
        assert_eq!(render("${esc.url($input.id)}", &c), "a+b%2Fc");
        assert_eq!(render("$esc.url(\"x ${input.id}\")", &c), "x+a+b%2Fc");
        assert_eq!(
            render(
                "$successTemplateUtils.firstFromArray(\"${arr}\", \"null\")",
                &c
            ),
            "\"x\""
        );
        assert_eq!(
            render("$successTemplateUtils.firstFromArray(\"[]\", \"null\")", &c),
            "null"
        );
        assert_eq!(
            render("$esc.url(${input.missing})", &c),
            "$esc.url(${input.missing})"
        );
    }
}
