//! Answering one query on one network: local names and reverse lookups
//! from the table, everything else forwarded.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::debug;

use crate::table::Answer;
use crate::{EDNS_PAYLOAD, Inner, LOCAL_TTL, QueryOutcome, upstream};

/// The request handler of one network's server.
pub struct NetHandler {
    pub(crate) inner: Arc<Inner>,
    pub(crate) network_id: String,
}

/// What a failed send reports (an answer that never left).
pub(crate) fn servfail() -> ResponseInfo {
    let mut m = Metadata::new(0, hickory_proto::op::MessageType::Response, OpCode::Query);
    m.response_code = ResponseCode::ServFail;
    hickory_proto::op::Header { metadata: m, counts: Default::default() }.into()
}

#[async_trait::async_trait]
impl RequestHandler for NetHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, EDNS_PAYLOAD));
            e
        });
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        let count = |o| self.inner.counts.add(o);
        if request.metadata.op_code != OpCode::Query {
            count(QueryOutcome::Refused);
            let msg = builder().error_msg(&request.metadata, ResponseCode::NotImp);
            return response.send_response(msg).await.unwrap_or_else(|_| servfail());
        }
        let Ok(info) = request.request_info() else {
            count(QueryOutcome::Refused);
            let msg = builder().error_msg(&request.metadata, ResponseCode::FormErr);
            return response.send_response(msg).await.unwrap_or_else(|_| servfail());
        };
        let qname: Name = info.query.name().into();
        let qtype = info.query.query_type();
        let client = request.src().ip();
        let text = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();

        let answer = {
            let table = self.inner.table.read().unwrap_or_else(|p| p.into_inner());
            if qtype == RecordType::PTR {
                match qname.parse_arpa_name() {
                    Ok(net) => table.lookup_addr(&self.network_id, client, net.addr()),
                    Err(_) => table.lookup_name(&self.network_id, client, &text),
                }
            } else {
                table.lookup_name(&self.network_id, client, &text)
            }
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let records: Vec<Record> = match answer {
            Answer::Forward(over) => {
                let ups = over.unwrap_or_else(|| self.inner.config.upstreams.clone());
                let tcp = request.protocol() == Protocol::Tcp;
                return match upstream::forward(request.as_slice(), tcp, &ups, self.inner.config.timeout).await {
                    Some(m) => {
                        count(QueryOutcome::Forwarded);
                        let mut meta = m.metadata;
                        meta.id = request.metadata.id;
                        let msg =
                            builder().build(meta, m.answers.iter(), m.authorities.iter(), [], m.additionals.iter());
                        response.send_response(msg).await.unwrap_or_else(|_| servfail())
                    }
                    None => {
                        count(QueryOutcome::UpstreamFailed);
                        debug!(name = %text, "no upstream answered");
                        let msg = builder().error_msg(&request.metadata, ResponseCode::ServFail);
                        response.send_response(msg).await.unwrap_or_else(|_| servfail())
                    }
                };
            }
            Answer::NxDomain => {
                meta.authoritative = true;
                meta.response_code = ResponseCode::NXDomain;
                Vec::new()
            }
            Answer::Names(names) => {
                meta.authoritative = true;
                if names.is_empty() {
                    meta.response_code = ResponseCode::NXDomain;
                }
                names
                    .iter()
                    .filter_map(|n| Name::from_str(&format!("{n}.")).ok())
                    .map(|n| Record::from_rdata(qname.clone(), LOCAL_TTL, RData::PTR(PTR(n))))
                    .collect()
            }
            Answer::Addresses(addrs) => {
                meta.authoritative = true;
                // A name with no address of the asked type is NODATA:
                // NOERROR with an empty answer section.
                addrs
                    .into_iter()
                    .filter_map(|a| match (a, qtype) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
                        _ => None,
                    })
                    .map(|rd| Record::from_rdata(qname.clone(), LOCAL_TTL, rd))
                    .collect()
            }
        };
        count(if meta.response_code == ResponseCode::NXDomain { QueryOutcome::NxDomain } else { QueryOutcome::Local });
        let msg = builder().build(meta, records.iter(), [], [], []);
        response.send_response(msg).await.unwrap_or_else(|_| servfail())
    }
}
