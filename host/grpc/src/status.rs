//! Every controller error becomes a gRPC status here, and only here.

use tonic::{Code, Status};
use weft_model::ControlError;

/// The longest message a status carries. Messages echo what the caller sent
/// (a name, a path) and travel in a response header: a 10^6-character name
/// once made an error no client could receive.
pub const MAX_MESSAGE: usize = 1024;

/// `msg`, or if it is longer than [`MAX_MESSAGE`] its start (the field) and
/// end (usually the rule) with the middle cut out, saying how much.
pub fn bounded(msg: String) -> String {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let keep = MAX_MESSAGE / 2 - 32;
    let mut head = keep;
    while !msg.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = msg.len() - keep;
    while !msg.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…({} bytes cut)…{}", &msg[..head], tail - head, &msg[tail..])
}

/// The status code of a controller error: each variant has exactly one.
pub fn code(e: &ControlError) -> Code {
    match e {
        ControlError::Invalid(_) => Code::InvalidArgument,
        ControlError::NotFound(_) => Code::NotFound,
        ControlError::AlreadyExists(_) => Code::AlreadyExists,
        ControlError::FailedPrecondition(_) => Code::FailedPrecondition,
        ControlError::Exhausted(_) => Code::ResourceExhausted,
        ControlError::Plugin(_) => Code::Unavailable,
        ControlError::OutOfRange(_) => Code::OutOfRange,
        ControlError::Aborted(_) => Code::Aborted,
        ControlError::Unavailable(_) => Code::Unavailable,
        ControlError::Internal(_) => Code::Internal,
        ControlError::Unauthenticated(_) => Code::Unauthenticated,
        ControlError::PermissionDenied(_) => Code::PermissionDenied,
    }
}

/// The status for a controller error; the message is the error's text, which
/// names the object and the rule (bounded: see [`bounded`]).
pub fn to_status(e: ControlError) -> Status {
    Status::new(code(&e), bounded(e.to_string()))
}

#[cfg(test)]
mod tests {
    use weft_model::InvalidRequest;

    use super::*;

    #[test]
    fn codes() {
        let s = to_status(InvalidRequest::new("subnets[0].subnet", "10.0.0.0/33: prefix length must be <= 32").into());
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "subnets[0].subnet: 10.0.0.0/33: prefix length must be <= 32");
        assert_eq!(to_status(ControlError::Exhausted("full".into())).code(), Code::ResourceExhausted);
        assert_eq!(to_status(ControlError::NotFound("x".into())).code(), Code::NotFound);
    }

    #[test]
    fn long_messages_keep_their_field_and_rule() {
        let name = "é".repeat(500_000);
        let s = to_status(InvalidRequest::new("name", format!("{name:?} must be 1 to 63 characters")).into());
        assert!(s.message().len() <= MAX_MESSAGE, "{}", s.message().len());
        assert!(s.message().starts_with("name: \"éé"), "{}", s.message());
        assert!(s.message().ends_with("éé\" must be 1 to 63 characters"), "{}", s.message());
        assert!(s.message().contains("bytes cut)"));
        let short = "subnets[0].subnet: 10.0.0.0/33: prefix length must be <= 32".to_string();
        assert_eq!(bounded(short.clone()), short);
    }
}
