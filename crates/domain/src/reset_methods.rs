//! Which registered authentication methods count for self-service password reset, and whether
//! a user still has enough of them once SMS and voice stop counting (graph-facts §11).
//!
//! Names are those of `userRegistrationDetails.methodsRegistered`. Only explicitly registered
//! methods count: directory attributes (`mobilePhone`, `businessPhones`, `otherMails` on the
//! user) never do. From 1 February 2027 Microsoft-provided SMS and voice are retired across
//! Entra, SSPR included, so the phone methods stop counting unless the tenant brings its own
//! telecom provider.

/// Microsoft Authenticator's notification.
pub const AUTHENTICATOR_PUSH: &str = "microsoftAuthenticatorPush";
/// A code from an authenticator app.
pub const APP_CODE: &str = "softwareOneTimePasscode";

/// Phone methods (SMS or voice). `alternateMobilePhone` is an MFA method that SSPR does not
/// list; it is named here so that it is never taken for a method that survives the retirement.
pub const PHONE_METHODS: [&str; 3] = ["mobilePhone", "alternateMobilePhone", "officePhone"];

/// Registered methods that count for a reset: the app's notification and code, email, mobile
/// and office phone, security questions. Passkeys, FIDO2 keys, Windows Hello and a temporary
/// access pass do not.
pub const RESET_METHODS: [&str; 6] =
    [AUTHENTICATOR_PUSH, APP_CODE, "email", "mobilePhone", "officePhone", "securityQuestion"];

/// Whether `name` is a phone method.
pub fn is_phone(name: &str) -> bool {
    PHONE_METHODS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// How many methods of `registered` count for a reset where `required` are needed, without the
/// phone methods unless `with_phone`. A method listed twice counts once; where two are
/// required, the app's notification and its code together count as one.
pub fn reset_method_count(registered: &[String], required: u8, with_phone: bool) -> u8 {
    let has = |m: &str| registered.iter().any(|r| r.eq_ignore_ascii_case(m));
    let mut n = RESET_METHODS.iter().filter(|m| has(m) && (with_phone || !is_phone(m))).count();
    if required >= 2 && has(AUTHENTICATOR_PUSH) && has(APP_CODE) {
        n -= 1;
    }
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Whether a user with `registered` methods can still reset once phone methods stop counting:
/// at least `required` other methods. Administrators always need two, whatever the users'
/// setting, and security questions never count for them (their reset policy does not offer
/// them).
pub fn enough_without_phone(registered: &[String], required: u8, is_admin: bool) -> bool {
    if is_admin {
        let without_questions: Vec<String> = registered
            .iter()
            .filter(|m| !m.eq_ignore_ascii_case("securityQuestion"))
            .cloned()
            .collect();
        return reset_method_count(&without_questions, 2, false) >= 2;
    }
    let required = required.clamp(1, 2);
    reset_method_count(registered, required, false) >= required
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn phone_methods_do_not_count_without_phone() {
        assert!(!enough_without_phone(&m(&["mobilePhone"]), 1, false));
        assert!(!enough_without_phone(&m(&["mobilePhone", "officePhone"]), 1, false));
        assert!(!enough_without_phone(&m(&["alternateMobilePhone"]), 1, false));
        assert!(enough_without_phone(&m(&["mobilePhone", "email"]), 1, false));
        assert!(!enough_without_phone(&m(&["mobilePhone", "email"]), 2, false));
        assert_eq!(reset_method_count(&m(&["mobilePhone", "email"]), 2, true), 2);
    }

    #[test]
    fn the_app_counts_once_where_two_are_required() {
        let app = m(&[AUTHENTICATOR_PUSH, APP_CODE]);
        assert!(enough_without_phone(&app, 1, false));
        assert!(!enough_without_phone(&app, 2, false));
        assert!(enough_without_phone(&m(&[AUTHENTICATOR_PUSH, APP_CODE, "email"]), 2, false));
    }

    #[test]
    fn administrators_always_need_two() {
        assert!(!enough_without_phone(&m(&["email"]), 1, true));
        assert!(enough_without_phone(&m(&["email", AUTHENTICATOR_PUSH]), 1, true));
        assert!(!enough_without_phone(&m(&["email", "securityQuestion"]), 1, true));
        assert!(enough_without_phone(&m(&["email", "securityQuestion"]), 2, false));
    }

    #[test]
    fn methods_that_do_not_reset_are_ignored() {
        let strong = m(&["fido2SecurityKey", "windowsHelloForBusiness", "passKeyDeviceBound"]);
        assert_eq!(reset_method_count(&strong, 1, true), 0);
        assert_eq!(reset_method_count(&m(&["email", "email"]), 1, true), 1);
    }
}
