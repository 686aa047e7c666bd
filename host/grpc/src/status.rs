//! Every controller error becomes a gRPC status here, and only here.

use tonic::{Code, Status};
use weft_model::ControlError;

/// The status for a controller error; the message is the error's text, which
/// names the object and the rule.
pub fn to_status(e: ControlError) -> Status {
    let code = match &e {
        ControlError::Invalid(_) => Code::InvalidArgument,
        ControlError::NotFound(_) => Code::NotFound,
        ControlError::AlreadyExists(_) => Code::AlreadyExists,
        ControlError::FailedPrecondition(_) => Code::FailedPrecondition,
        ControlError::Exhausted(_) => Code::ResourceExhausted,
        ControlError::Plugin(_) => Code::Unavailable,
        ControlError::OutOfRange(_) => Code::OutOfRange,
        ControlError::Aborted(_) => Code::Aborted,
        ControlError::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
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
}
