//! Stock gRPC clients on weftd's Unix socket, as they are: grpc-python's
//! default client on `unix:PATH` (which sends the socket's path as
//! `:authority`), and the same with the authority grpcurl `-unix` sends.
//! Without weft's lenient reading of the socket, the HTTP/2 server resets
//! every such stream (INTERNAL "Stream removed").
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use weft_tests::Host;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_python_reaches_the_unix_socket_as_it_is() {
    let host = Host::new("pyclient");
    host.create_network("web", &["10.79.0.0/24"]).await.unwrap();
    // docs/orchestrators.md's client: health and ListNetworks with raw bytes
    // (no generated code), with grpc-python's default authority and with
    // the socket's path (what grpcurl -unix sends).
    let client = weft_tests::block_after(weft_tests::ORCHESTRATORS, "(grpc-python client)", "python");
    let out = Command::new("python3").args(["-c", &client]).arg(host.socket()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // SERVING is field 1 = 1; the list names the network.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0801 True\n0801 True\n");
}
