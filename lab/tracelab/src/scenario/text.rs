//! Texts in both of the lab's languages, and the language a learner reads.

use serde::{Deserialize, Serialize};

/// A text in both of the lab's languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    /// English.
    pub en: String,
    /// Japanese.
    pub ja: String,
}

/// Removes the spaces YAML's folded scalars (`>`) put where a Japanese line
/// was broken: a space between two non-ASCII characters. Spaces next to
/// Latin words (`payment の`) stay.
pub fn unfold_japanese(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' '
            && i > 0
            && !chars[i - 1].is_ascii()
            && chars.get(i + 1).is_some_and(|n| !n.is_ascii())
        {
            continue;
        }
        out.push(c);
    }
    out
}

impl Text {
    pub(super) fn unfold(mut self) -> Text {
        self.ja = unfold_japanese(&self.ja);
        self
    }

    /// The text in `lang` (`ja`, else English).
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Ja => &self.ja,
            Lang::En => &self.en,
        }
    }
}

/// Output language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Japanese.
    Ja,
}

impl std::str::FromStr for Lang {
    type Err = String;

    /// `en` or `ja` (case and blanks do not matter).
    fn from_str(s: &str) -> Result<Lang, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Ok(Lang::En),
            "ja" => Ok(Lang::Ja),
            _ => Err(format!("expected en or ja, got {s:?}")),
        }
    }
}

impl Lang {
    /// `ja` when `$TRACELAB_LANG`, else `$LC_ALL`, else `$LANG` starts with
    /// `ja`; English otherwise.
    pub fn from_env() -> Lang {
        let lang = std::env::var("TRACELAB_LANG")
            .or_else(|_| std::env::var("LC_ALL"))
            .or_else(|_| std::env::var("LANG"))
            .unwrap_or_default();
        if lang.to_ascii_lowercase().starts_with("ja") {
            Lang::Ja
        } else {
            Lang::En
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_read_from_text() {
        assert_eq!(" JA ".parse(), Ok(Lang::Ja));
        assert_eq!("en".parse(), Ok(Lang::En));
        assert!("fr".parse::<Lang>().unwrap_err().contains("en or ja"));
    }

    #[test]
    fn unfolds_japanese_lines() {
        assert_eq!(
            unfold_japanese("API Gateway・ 外部決済API。 今回は payment の Span"),
            "API Gateway・外部決済API。今回は payment の Span"
        );
    }
}
