//! Microsoft Graph's answers as the client decodes them: the first byte picks the type, the
//! rest is the body. Any body must decode or fail with an error, never panic; and what decodes
//! must encode again (the types written back after a read keep what they do not model).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};
use sspr_graph::types::{
    AuthenticationMethodsPolicy, AuthorizationPolicy, BatchResponse, Collection, DirectoryAudit,
    GraphErrorBody, Group, MethodConfiguration, Organization, RegistrationEnforcement,
    SubscribedSku, TokenErrorBody, TokenResponse, User, UserRegistrationDetails,
    UserRegistrationFeatureSummary, UserRegistrationMethodSummary,
};

fn decode<T: DeserializeOwned + Serialize>(body: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        let _ = serde_json::to_vec(&value).expect("what decodes encodes again");
    }
}

/// For the answers that are only ever read (token answers).
fn decode_only<T: DeserializeOwned>(body: &[u8]) {
    let _ = serde_json::from_slice::<T>(body);
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else { return };
    match which % 16 {
        0 => decode::<AuthenticationMethodsPolicy>(body),
        1 => decode::<MethodConfiguration>(body),
        2 => decode::<Collection<MethodConfiguration>>(body),
        3 => decode::<Collection<User>>(body),
        4 => decode::<Collection<UserRegistrationDetails>>(body),
        5 => decode::<Collection<Group>>(body),
        6 => decode::<Collection<SubscribedSku>>(body),
        7 => decode::<Collection<Organization>>(body),
        8 => decode::<Collection<DirectoryAudit>>(body),
        9 => decode::<GraphErrorBody>(body),
        10 => decode_only::<TokenResponse>(body),
        11 => decode_only::<TokenErrorBody>(body),
        12 => decode::<BatchResponse>(body),
        13 => decode::<AuthorizationPolicy>(body),
        14 => decode::<RegistrationEnforcement>(body),
        _ => {
            decode::<UserRegistrationFeatureSummary>(body);
            decode::<UserRegistrationMethodSummary>(body);
        }
    }
});
