//! The NCA RK (Kazakhstan) certificate profile (SPEC §7): who a certificate names.
//!
//! Subject: `CN` = "SURNAME NAME", `SURNAME`, `GIVENNAME` = the **patronymic**, `serialNumber` =
//! `IIN` + 12 digits, `O` = organisation and `OU` = `BIN` + 12 digits for legal entities. Email
//! from subjectAltName rfc822Name or subject emailAddress. Roles from extended key usage OIDs
//! under 1.2.398.3.3.4.1 (policies are not reliable for roles).
//!
//! Key usage: SIGN keys carry nonRepudiation; AUTH keys carry digitalSignature +
//! keyEncipherment with EKU clientAuth and are meant for logging in, not for signing documents.

use super::cert::{
    Cert, EKU_CLIENT_AUTH, EKU_EMAIL_PROTECTION, KU_DIGITAL_SIGNATURE, KU_NON_REPUDIATION,
};

const OID_CN: &str = "2.5.4.3";
const OID_SURNAME: &str = "2.5.4.4";
const OID_SERIAL_NUMBER: &str = "2.5.4.5";
const OID_O: &str = "2.5.4.10";
const OID_OU: &str = "2.5.4.11";
const OID_GIVEN_NAME: &str = "2.5.4.42";
const OID_EMAIL: &str = "1.2.840.113549.1.9.1";

/// Role EKU OIDs in the order roles are listed.
const ROLES: &[(&str, &str)] = &[
    ("1.2.398.3.3.4.1.1", "individual"),
    ("1.2.398.3.3.4.1.2", "legal-entity"),
    ("1.2.398.3.3.4.1.2.1", "ceo"),
    ("1.2.398.3.3.4.1.2.2", "can-sign"),
    ("1.2.398.3.3.4.1.2.3", "can-sign-financial"),
    ("1.2.398.3.3.4.1.2.4", "hr"),
    ("1.2.398.3.3.4.1.2.5", "employee"),
];

/// What a signer's key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// A signing key: nonRepudiation, or digitalSignature outside the NCA AUTH profile, or no
    /// keyUsage extension at all (unrestricted, RFC 5280 §4.2.1.3).
    Sign,
    /// An authentication key (NCA AUTH profile: digitalSignature without nonRepudiation and EKU
    /// clientAuth without emailProtection). Not meant for signing documents.
    Auth,
    /// keyUsage present without digitalSignature or nonRepudiation.
    Other,
}

impl KeyUse {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Sign => "sign",
            KeyUse::Auth => "auth",
            KeyUse::Other => "other",
        }
    }
}

/// The identity a certificate states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub common_name: Option<String>,
    pub surname: Option<String>,
    /// GIVENNAME, which NCA RK fills with the patronymic.
    pub given_name: Option<String>,
    /// CN + " " + patronymic (or CN alone).
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub iin: Option<String>,
    pub bin: Option<String>,
    pub organization: Option<String>,
    pub roles: Vec<String>,
}

/// Classifies the key usage of a signer certificate.
pub fn key_use(cert: &Cert) -> KeyUse {
    let Some(ku) = cert.key_usage else {
        return KeyUse::Sign;
    };
    if ku & KU_NON_REPUDIATION != 0 {
        return KeyUse::Sign;
    }
    if ku & KU_DIGITAL_SIGNATURE != 0 {
        let eku = cert.eku.as_deref().unwrap_or_default();
        let auth = eku.iter().any(|o| o == EKU_CLIENT_AUTH)
            && !eku.iter().any(|o| o == EKU_EMAIL_PROTECTION);
        return if auth { KeyUse::Auth } else { KeyUse::Sign };
    }
    KeyUse::Other
}

fn clean(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Strips a prefix such as `IIN` / `BIN` and returns the digits after it.
fn prefixed_number(value: &str, prefix: &str) -> Option<String> {
    let v = value.trim();
    let rest = v
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix))
        .map(|_| &v[prefix.len()..])?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())).then(|| rest.to_string())
}

/// Reads the NCA RK profile from a certificate.
pub fn profile(cert: &Cert) -> Profile {
    let common_name = cert.subject_attr(OID_CN).and_then(clean);
    let surname = cert.subject_attr(OID_SURNAME).and_then(clean);
    let given_name = cert.subject_attr(OID_GIVEN_NAME).and_then(clean);
    let full_name = match (&common_name, &given_name) {
        (Some(cn), Some(p)) => Some(format!("{cn} {p}")),
        (Some(cn), None) => Some(cn.clone()),
        (None, _) => None,
    };
    let email = cert
        .san_emails
        .iter()
        .cloned()
        .chain(cert.subject_attrs(OID_EMAIL))
        .find_map(clean);
    let iin = cert
        .subject_attrs(OID_SERIAL_NUMBER)
        .iter()
        .find_map(|v| prefixed_number(v, "IIN"));
    let bin = cert
        .subject_attrs(OID_OU)
        .iter()
        .find_map(|v| prefixed_number(v, "BIN"));
    let organization = cert.subject_attr(OID_O).and_then(clean);
    let eku = cert.eku.as_deref().unwrap_or_default();
    let roles = ROLES
        .iter()
        .filter(|(oid, _)| eku.iter().any(|o| o == oid))
        .map(|(_, name)| name.to_string())
        .collect();
    Profile {
        common_name,
        surname,
        given_name,
        full_name,
        email,
        iin,
        bin,
        organization,
        roles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(
            prefixed_number("IIN123456789011", "IIN").as_deref(),
            Some("123456789011")
        );
        assert_eq!(prefixed_number("BIN", "BIN"), None);
        assert_eq!(prefixed_number("XIN123", "IIN"), None);
        assert_eq!(prefixed_number("Иван", "IIN"), None);
    }
}
