//! The fixed lines the agent says when the conversation cannot run its normal course: the
//! hand-off before a transfer, the apology when the language model cannot answer, the question
//! to a caller gone silent, and the last words of a call that cannot go on. Defaults per language; an agent profile may override each.

use serde::{Deserialize, Serialize};

/// The lines of one agent profile, in its language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpokenLines {
    /// Before a transfer to a human (escalation).
    pub handoff: String,
    /// When the language model cannot answer a turn.
    pub apology: String,
    /// The last words of a call that cannot go on, before a transfer to a human.
    pub failure_transfer: String,
    /// The last words of a call that cannot go on when there is nobody to transfer to.
    pub goodbye: String,
    /// Asked once when the caller has said nothing for `calls.silence_limit_secs`.
    pub still_there: String,
}

/// Overrides of some lines, as stored with an agent profile (missing ones use the defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineOverrides {
    #[serde(default)]
    pub handoff: Option<String>,
    #[serde(default)]
    pub apology: Option<String>,
    #[serde(default)]
    pub failure_transfer: Option<String>,
    #[serde(default)]
    pub goodbye: Option<String>,
    #[serde(default)]
    pub still_there: Option<String>,
}

impl SpokenLines {
    /// The defaults for a BCP 47 language (`es-MX` uses `es`); English for languages without
    /// a translation.
    pub fn defaults(language: &str) -> Self {
        let primary = language
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let [handoff, apology, failure_transfer, goodbye, still_there] = match primary.as_str() {
            "es" => [
                "Le comunico con un compañero que podrá ayudarle. Un momento, por favor.",
                "Disculpe, estoy teniendo problemas. ¿Podría repetirlo?",
                "Lo siento, tengo un problema técnico. Le comunico con un compañero.",
                "Lo siento, tengo un problema técnico y no puedo continuar. Por favor, vuelva a llamar más tarde. Adiós.",
                "¿Sigue ahí?",
            ],
            "fr" => [
                "Je vous mets en relation avec un collègue qui pourra vous aider. Ne quittez pas.",
                "Désolé, j'ai un souci. Pourriez-vous répéter ?",
                "Désolé, j'ai un problème technique. Je vous mets en relation avec un collègue.",
                "Désolé, j'ai un problème technique et ne peux pas continuer. Merci de rappeler plus tard. Au revoir.",
                "Êtes-vous toujours là ?",
            ],
            "de" => [
                "Ich verbinde Sie mit einem Kollegen, der Ihnen helfen kann. Bitte bleiben Sie dran.",
                "Entschuldigung, ich habe gerade Probleme. Könnten Sie das wiederholen?",
                "Entschuldigung, ich habe ein technisches Problem. Ich verbinde Sie mit einem Kollegen.",
                "Entschuldigung, ich habe ein technisches Problem und kann nicht weitermachen. Bitte rufen Sie später wieder an. Auf Wiederhören.",
                "Sind Sie noch da?",
            ],
            "pt" => [
                "Vou transferir você para um colega que pode ajudar. Aguarde, por favor.",
                "Desculpe, estou com dificuldades. Pode repetir?",
                "Desculpe, estou com um problema técnico. Vou transferir você para um colega.",
                "Desculpe, estou com um problema técnico e não posso continuar. Por favor, ligue mais tarde. Tchau.",
                "Você ainda está aí?",
            ],
            _ => [
                "I'm connecting you with a colleague who can help. Please hold.",
                "Sorry, I'm having trouble right now. Could you say that again?",
                "I'm sorry, I'm having a technical problem. Let me connect you with a colleague.",
                "I'm sorry, I'm having a technical problem and can't continue. Please call back later. Goodbye.",
                "Are you still there?",
            ],
        };
        Self {
            handoff: handoff.to_owned(),
            apology: apology.to_owned(),
            failure_transfer: failure_transfer.to_owned(),
            goodbye: goodbye.to_owned(),
            still_there: still_there.to_owned(),
        }
    }

    /// The defaults of `language` with a profile's overrides on top (blank ones ignored).
    pub fn for_profile(language: &str, overrides: &LineOverrides) -> Self {
        let mut lines = Self::defaults(language);
        let pick = |slot: &mut String, value: &Option<String>| {
            if let Some(v) = value.as_ref().filter(|v| !v.trim().is_empty()) {
                *slot = v.clone();
            }
        };
        pick(&mut lines.handoff, &overrides.handoff);
        pick(&mut lines.apology, &overrides.apology);
        pick(&mut lines.failure_transfer, &overrides.failure_transfer);
        pick(&mut lines.goodbye, &overrides.goodbye);
        pick(&mut lines.still_there, &overrides.still_there);
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_profile_language_and_fall_back_to_english() {
        assert!(SpokenLines::defaults("es-MX")
            .apology
            .starts_with("Disculpe"));
        assert!(SpokenLines::defaults("fr").goodbye.ends_with("Au revoir."));
        assert!(SpokenLines::defaults("ja-JP")
            .handoff
            .starts_with("I'm connecting"));
        assert!(SpokenLines::defaults("").goodbye.ends_with("Goodbye."));
        assert_eq!(
            SpokenLines::defaults("de-AT").still_there,
            "Sind Sie noch da?"
        );
    }

    #[test]
    fn profile_overrides_replace_only_what_they_set() {
        let lines = SpokenLines::for_profile(
            "de-DE",
            &LineOverrides {
                goodbye: Some("Tschüss!".into()),
                apology: Some("  ".into()),
                ..Default::default()
            },
        );
        assert_eq!(lines.goodbye, "Tschüss!");
        assert!(lines.apology.starts_with("Entschuldigung"));
    }
}
