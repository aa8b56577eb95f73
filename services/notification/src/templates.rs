//! Mail templates: a subject, a plain-text and an HTML body per template,
//! with `{{field}}` placeholders. The defaults are compiled in from
//! `services/notification/templates/`; a directory given in
//! `LANDLORD_MAIL_TEMPLATES` overrides any of the files by name.
//!
//! Values are inserted as they are into the subject and the text body and
//! HTML-escaped into the HTML body. A placeholder naming no known field is
//! an error when the templates are loaded, not when a mail is sent.
//!
//! An empty (or blank) value takes the space before its placeholder with
//! it, so "Hello {{admin_first_name}} {{admin_last_name}}," greets an admin
//! without a name as "Hello," rather than "Hello  ," and one with only a
//! first name as "Hello Ada,".

use std::collections::HashMap;
use std::path::Path;

/// The templates the service sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Welcome,
    ProvisioningFailed,
    Suspended,
    Resumed,
    DeletionScheduled,
    Deleted,
    /// A sign-up's verification link (issue 29), outside any saga.
    SignupVerification,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Welcome,
        Kind::ProvisioningFailed,
        Kind::Suspended,
        Kind::Resumed,
        Kind::DeletionScheduled,
        Kind::Deleted,
        Kind::SignupVerification,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Welcome => "tenant-welcome",
            Kind::ProvisioningFailed => "tenant-provisioning-failed",
            Kind::Suspended => "tenant-suspended",
            Kind::Resumed => "tenant-resumed",
            Kind::DeletionScheduled => "tenant-deletion-scheduled",
            Kind::Deleted => "tenant-deleted",
            Kind::SignupVerification => "signup-verification",
        }
    }

    fn defaults(self) -> [&'static str; 3] {
        match self {
            Kind::Welcome => [
                include_str!("../templates/tenant-welcome.subject"),
                include_str!("../templates/tenant-welcome.txt"),
                include_str!("../templates/tenant-welcome.html"),
            ],
            Kind::ProvisioningFailed => [
                include_str!("../templates/tenant-provisioning-failed.subject"),
                include_str!("../templates/tenant-provisioning-failed.txt"),
                include_str!("../templates/tenant-provisioning-failed.html"),
            ],
            Kind::Suspended => [
                include_str!("../templates/tenant-suspended.subject"),
                include_str!("../templates/tenant-suspended.txt"),
                include_str!("../templates/tenant-suspended.html"),
            ],
            Kind::Resumed => [
                include_str!("../templates/tenant-resumed.subject"),
                include_str!("../templates/tenant-resumed.txt"),
                include_str!("../templates/tenant-resumed.html"),
            ],
            Kind::DeletionScheduled => [
                include_str!("../templates/tenant-deletion-scheduled.subject"),
                include_str!("../templates/tenant-deletion-scheduled.txt"),
                include_str!("../templates/tenant-deletion-scheduled.html"),
            ],
            Kind::Deleted => [
                include_str!("../templates/tenant-deleted.subject"),
                include_str!("../templates/tenant-deleted.txt"),
                include_str!("../templates/tenant-deleted.html"),
            ],
            Kind::SignupVerification => [
                include_str!("../templates/signup-verification.subject"),
                include_str!("../templates/signup-verification.txt"),
                include_str!("../templates/signup-verification.html"),
            ],
        }
    }
}

/// The fields a template may use.
pub const FIELDS: [&str; 15] = [
    "tenant_name",
    "admin_first_name",
    "admin_last_name",
    "admin_username",
    "password_instructions",
    "database_instructions",
    "login_url",
    "admin_portal_url",
    "app_url",
    "support_email",
    "failed_step",
    "reason",
    "purge_date",
    "verification_link",
    "link_expires",
];

const EXTENSIONS: [&str; 3] = ["subject", "txt", "html"];

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template {file}: {problem}")]
    Invalid { file: String, problem: String },
    #[error("reading template {file}: {source}")]
    Read { file: String, source: std::io::Error },
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, Clone)]
struct Parts {
    subject: String,
    text: String,
    html: String,
}

/// All templates, checked.
#[derive(Debug, Clone)]
pub struct Templates {
    parts: HashMap<Kind, Parts>,
}

impl Templates {
    /// The compiled-in templates, each file overridden by the one of the
    /// same name in `dir`, if given and present.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut parts = HashMap::new();
        for kind in Kind::ALL {
            let mut texts = kind.defaults().map(str::to_owned);
            for (text, ext) in texts.iter_mut().zip(EXTENSIONS) {
                let file = format!("{}.{ext}", kind.name());
                if let Some(dir) = dir {
                    let path = dir.join(&file);
                    if path.exists() {
                        *text = std::fs::read_to_string(&path)
                            .map_err(|source| TemplateError::Read { file: path.display().to_string(), source })?;
                    }
                }
                check(text).map_err(|problem| TemplateError::Invalid { file, problem })?;
            }
            let [subject, text, html] = texts;
            let subject = subject.trim().to_owned();
            if subject.contains(['\r', '\n']) {
                return Err(TemplateError::Invalid {
                    file: format!("{}.subject", kind.name()),
                    problem: "a subject is one line".into(),
                });
            }
            parts.insert(kind, Parts { subject, text, html });
        }
        Ok(Self { parts })
    }

    pub fn render(&self, kind: Kind, values: &HashMap<&str, String>) -> Rendered {
        let parts = &self.parts[&kind];
        Rendered {
            subject: fill(&parts.subject, values, |v| v.replace(['\r', '\n'], " ")),
            text: fill(&parts.text, values, str::to_owned),
            html: fill(&parts.html, values, escape_html),
        }
    }
}

/// Checks that every `{{…}}` names a known field.
fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("a {{ without its }}")?;
        let field = after[..end].trim();
        if !FIELDS.contains(&field) {
            return Err(format!("unknown field {{{{{field}}}}}; known: {}", FIELDS.join(", ")));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

fn fill(template: &str, values: &HashMap<&str, String>, encode: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // `check` saw every placeholder closed.
        let end = after.find("}}").unwrap_or(after.len());
        let field = after[..end].trim();
        let value = values.get(field).map_or("", String::as_str);
        if value.trim().is_empty() {
            // Nothing to say: no space before nothing either.
            if out.ends_with(' ') {
                out.pop();
            }
        } else {
            out.push_str(&encode(value));
        }
        rest = after.get(end + 2..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> HashMap<&'static str, String> {
        [("tenant_name", "Acme <script>alert(1)</script> & Co".to_owned()), ("admin_first_name", "Ada".to_owned())]
            .into()
    }

    #[test]
    fn html_gets_escaped_values_and_text_gets_them_as_they_are() {
        let templates = Templates::load(None).unwrap();
        let mail = templates.render(Kind::Welcome, &values());
        assert_eq!(mail.subject, "Welcome to Acme <script>alert(1)</script> & Co");
        assert!(mail.text.contains("Acme <script>alert(1)</script> & Co is ready"));
        assert!(mail.html.contains("<strong>Acme &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</strong>"));
        assert!(!mail.html.contains("<script>"));
    }

    #[test]
    fn an_unknown_field_fails_at_load() {
        let dir = std::env::temp_dir().join(format!("landlord-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tenant-welcome.txt"), "Hi {{password}}").unwrap();
        let error = Templates::load(Some(&dir)).unwrap_err().to_string();
        assert!(error.contains("tenant-welcome.txt") && error.contains("unknown field {{password}}"), "{error}");
        std::fs::write(dir.join("tenant-welcome.txt"), "Hi {{admin_first_name}}, welcome").unwrap();
        let mail = Templates::load(Some(&dir)).unwrap().render(Kind::Welcome, &values());
        assert_eq!(mail.text, "Hi Ada, welcome");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 23, item 10: "Hello  ," for an admin without a name.
    #[test]
    fn a_greeting_without_a_name_has_no_stray_spaces() {
        let templates = Templates::load(None).unwrap();
        let named = |first: &str, last: &str| {
            let values: HashMap<&str, String> = [
                ("tenant_name", "Acme".to_owned()),
                ("admin_first_name", first.to_owned()),
                ("admin_last_name", last.to_owned()),
            ]
            .into();
            Kind::ALL.map(|kind| templates.render(kind, &values))
        };
        for mail in named("", "") {
            assert!(mail.text.starts_with("Hello,\n"), "{:?}", mail.text);
            assert!(mail.html.contains("<p>Hello,</p>"), "{:?}", mail.html);
            assert!(!mail.text.contains("  ,") && !mail.text.contains(" ,"), "{:?}", mail.text);
        }
        for mail in named("  ", "") {
            assert!(mail.text.starts_with("Hello,\n"), "a blank name is no name: {:?}", mail.text);
        }
        for mail in named("Ada", "") {
            assert!(mail.text.starts_with("Hello Ada,\n"), "{:?}", mail.text);
        }
        for mail in named("", "Lovelace") {
            assert!(mail.text.starts_with("Hello Lovelace,\n"), "{:?}", mail.text);
        }
        for mail in named("Ada", "Lovelace") {
            assert!(mail.text.starts_with("Hello Ada Lovelace,\n"), "{:?}", mail.text);
            assert!(mail.html.contains("<p>Hello Ada Lovelace,</p>"), "{:?}", mail.html);
        }
    }
}
