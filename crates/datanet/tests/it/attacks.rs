//! Attacks on the Datanet service.
//!
//! Issue #17: content and manifests of a permissioned Datanet read through a Datanet the
//! attacker controls. Every Datanet shares one content-addressed store, so a hash copied from
//! a public page must not open the bytes.
//!
//! Issue #19: a near-copy uploaded while the original is still pending must be scored as a
//! copy; the earlier upload is the original whatever order the curator approves in.

use crate::common::{Harness, api_kind};
use alloy::network::EthereumWallet;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy_primitives::{B256, U256, keccak256};
use eyre::{Result, ensure, eyre};
use openledger_datanet::manifest::MANIFEST_VERSION;
use openledger_datanet::validate::ValidationConfig;
use openledger_datanet::{DatanetClient, Manifest, ManifestEntry, UploadReceipt};
use openledger_protocol::Confirm;
use openledger_protocol::bindings::DatanetRegistry;
use serde_json::Value;

const SECRET: &[u8] = b"harbour log: the night ferry carries sealed crates past the breakwater\n\n\
    harbour log: the pilot boat meets the tanker two miles out at slack water";

/// A permissioned Datanet (owner 0, contributor 1) with one accepted, licensee-only file and a
/// published version; returns (datanet, contribution, content hash, manifest hash).
async fn permissioned(h: &Harness) -> Result<(u64, u64, B256, B256)> {
    let owner = h.client(0).await?;
    let alice = h.client(1).await?;
    let fee = U256::from(10u64).pow(U256::from(15u64));
    let d = owner.create_datanet("harbour logs", "", true, fee).await?;
    owner.allow_contributor(d, alice.address()).await?;
    let r = alice
        .upload_bytes(d, "secret.txt", &[], SECRET.to_vec())
        .await?;
    let c = alice.contribute(d, &r).await?;
    owner.approve(c).await?;
    h.svc.sync().await?;
    let (_, _, mh) = owner.publish(d).await?;
    Ok((d.get(), c.get(), r.content_hash, mh))
}

/// The registry as `account` sends it (transactions straight to the chain, around the service).
fn registry(
    h: &Harness,
    account: usize,
) -> Result<DatanetRegistry::DatanetRegistryInstance<DynProvider>> {
    let address = h.devnet.deployments.contracts.datanet_registry;
    // Nonces read per transaction: the same account also sends through a DatanetClient.
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(
            h.devnet.accounts[account].signer.clone(),
        ))
        .connect_http(h.devnet.rpc_url().parse()?)
        .erased();
    Ok(DatanetRegistry::new(address, provider))
}

/// A stolen hash recorded on chain as the stranger's own contribution (no upload).
async fn contribute_hash(stranger: &DatanetClient, d: u64, hash: B256) -> Result<u64> {
    let receipt = UploadReceipt {
        content_hash: hash,
        byte_size: SECRET.len() as u64,
        row_count: 2,
        score: 100,
        reasons: Vec::new(),
        rows_root: B256::ZERO,
    };
    Ok(stranger.contribute(d, &receipt).await?.get())
}

/// An unsigned GET: (status, body bytes).
async fn get(url: &str) -> Result<(u16, Vec<u8>)> {
    let r = reqwest::get(url).await?;
    let status = r.status().as_u16();
    Ok((status, r.bytes().await?.to_vec()))
}

fn error_type(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["type"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn leaks(body: &[u8], secret: &[u8]) -> bool {
    body.windows(secret.len().min(40))
        .any(|w| w == &secret[..secret.len().min(40)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_read_permissioned_content_through_another_datanet() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    let (perm, perm_c, hash, _) = permissioned(&h).await?;
    let stranger = h.client(5).await?;

    // The hash is public: the permissioned Datanet's page lists it.
    let page = stranger.show(perm).await?;
    let listed: B256 = page["contributions"][0]["contribution"]["contentHash"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| eyre!("no content hash on the page: {page}"))?;
    ensure!(listed == hash);

    // His own public Datanet, the stolen hash contributed on chain (no upload) and approved.
    let mine = stranger
        .create_datanet("totally public", "", false, U256::ZERO)
        .await?;
    let c = contribute_hash(&stranger, mine.get(), hash).await?;
    stranger.approve(c).await?;
    h.svc.sync().await?;

    let (status, body) = get(&format!("{}/{mine}/contributions/{c}/content", h.api)).await?;
    ensure!(
        !leaks(&body, SECRET),
        "the permissioned bytes were served through datanet {mine} ({status})"
    );
    ensure!(
        status == 403 && error_type(&body) == "unbacked_contribution",
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    // A signed read by the stranger through his own Datanet is refused the same way.
    let (status, kind, _) = api_kind(stranger.download(mine, c).await)?;
    ensure!(
        status == 403 && kind == "unbacked_contribution",
        "{status} {kind}"
    );

    // His Datanet's page says the contribution is not backed by an upload of its contributor,
    // and no version of it can be prepared.
    let page = stranger.show(mine).await?;
    ensure!(page["contributions"][0]["backed"] == false, "{page}");
    let r = reqwest::Client::new()
        .post(format!("{}/{mine}/versions/prepare", h.api))
        .send()
        .await?;
    let (status, body) = (r.status().as_u16(), r.bytes().await?.to_vec());
    ensure!(
        status == 409 && error_type(&body) == "unbacked_contribution",
        "{status} {}",
        String::from_utf8_lossy(&body)
    );

    // Legitimate reads still work: the licensee through the permissioned Datanet, and the
    // permissioned page says its contribution is backed.
    let licensee = h.client(2).await?;
    let (status, kind, _) = api_kind(licensee.download(perm, perm_c).await)?;
    ensure!(status == 403 && kind == "not_licensed", "{status} {kind}");
    licensee.buy_licence(perm).await?;
    ensure!(licensee.download(perm, perm_c).await? == SECRET);
    let page = stranger.show(perm).await?;
    ensure!(page["contributions"][0]["backed"] == true, "{page}");
    h.devnet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanet_serves_only_its_own_manifest() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    let (perm, perm_c, hash, perm_manifest) = permissioned(&h).await?;
    let stranger = h.client(5).await?;
    let reg = registry(&h, 5)?;
    let mine = stranger
        .create_datanet("totally public", "", false, U256::ZERO)
        .await?;
    // One honest accepted contribution, so versions of his Datanet can be published.
    let r = stranger
        .upload_bytes(
            mine,
            "own.txt",
            &[],
            b"a note about gulls following the fishing boats home".to_vec(),
        )
        .await?;
    let own = stranger.contribute(mine, &r).await?;
    stranger.approve(own).await?;
    // A crafted manifest that claims to be the permissioned Datanet's, listing its
    // contribution, uploaded to his Datanet as an ordinary text file.
    let crafted = Manifest {
        format: MANIFEST_VERSION,
        chain_id: h.svc.chain_id(),
        registry: h.svc.registry(),
        datanet_id: perm,
        contributions: vec![ManifestEntry {
            contribution_id: perm_c,
            content_hash: hash,
            contributor: h.devnet.accounts[1].address,
            row_count: 2,
            byte_size: SECRET.len() as u64,
            rows_root: B256::ZERO,
            file_name: "secret.txt".into(),
        }],
    };
    let crafted_hash = stranger
        .upload_bytes(mine, "notes.txt", &[], crafted.to_bytes())
        .await?
        .content_hash;
    ensure!(crafted_hash == keccak256(crafted.to_bytes()));

    // Versions of his Datanet whose manifest hash is: the permissioned Datanet's manifest,
    // the permissioned content itself, the crafted manifest.
    for (v, manifest_hash) in [(0u64, perm_manifest), (1, hash), (2, crafted_hash)] {
        reg.publishVersion(
            U256::from(mine),
            B256::repeat_byte(7),
            U256::from(1),
            manifest_hash,
        )
        .send()
        .await?
        .confirm()
        .await?;
        h.svc.sync().await?;
        let (status, body) = get(&format!("{}/{mine}/versions/{v}/manifest", h.api)).await?;
        ensure!(
            !leaks(&body, SECRET) && !body.starts_with(b"{\"format\""),
            "version {v}: a foreign blob was served as datanet {mine}'s manifest ({status})"
        );
        ensure!(
            status == 403 && error_type(&body) == "foreign_manifest",
            "version {v}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let (status, body) = get(&format!("{}/{mine}/versions/{v}/proof/{perm_c}", h.api)).await?;
        ensure!(
            status == 403 && error_type(&body) == "foreign_manifest",
            "proof of version {v}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Legitimate: the permissioned manifest through its own Datanet, for the owner.
    let owner = h.client(0).await?;
    ensure!(owner.verify(perm, 0).await?.ok());
    h.devnet.shutdown().await;
    Ok(())
}

/// Three long rows (near-duplicate detection needs enough word 3-grams).
const ORIGINAL: &str = "the lighthouse keeper on the northern cape records every passing ship by name \
    and the hour it rounds the point, in a ledger kept dry in a tin box under the stairs\n\n\
    in winter the supply boat comes once a fortnight with flour, lamp oil, letters and the \
    newspapers that the keeper reads from the oldest to the newest, one each morning\n\n\
    the fog signal is wound by hand every two hours on foggy nights and the keeper logs \
    each winding with the time, the visibility in cables and the direction of the swell";

/// The original with the last word of each row changed: every row is a near-duplicate.
fn near_copy() -> String {
    ORIGINAL
        .split("\n\n")
        .map(|row| match row.rsplit_once(' ') {
            Some((head, _)) => format!("{head} indeed"),
            None => row.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_copy_uploaded_while_the_original_is_pending_is_scored_as_a_copy() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    let owner = h.client(0).await?;
    let author = h.client(1).await?;
    let copier = h.client(2).await?;
    let d = owner
        .create_datanet("lighthouse notes", "", false, U256::ZERO)
        .await?;

    // The author uploads first; the copier uploads a near-copy before anything is curated
    // (before the author has even recorded the contribution on chain).
    let original = author
        .upload_bytes(d, "keeper.txt", &[], ORIGINAL.as_bytes().to_vec())
        .await?;
    ensure!(original.score == 100, "{original:?}");
    let copy = copier
        .upload_bytes(d, "keeper.txt", &[], near_copy().into_bytes())
        .await?;
    ensure!(
        copy.score == 25 && copy.reasons.iter().any(|r| r.contains("near-duplicate")),
        "a near-copy of a pending upload was scored as original: {copy:?}"
    );
    // The same bytes under another account are the author's content, not a new upload.
    let (status, kind, _) = api_kind(
        copier
            .upload_bytes(d, "mine.txt", &[], ORIGINAL.as_bytes().to_vec())
            .await,
    )?;
    ensure!(
        status == 409 && kind == "duplicate_content",
        "{status} {kind}"
    );
    // The author's own retry is not a copy of himself: the recorded receipt comes back.
    let retry = author
        .upload_bytes(d, "keeper.txt", &[], ORIGINAL.as_bytes().to_vec())
        .await?;
    ensure!(
        (retry.score, retry.content_hash, retry.rows_root)
            == (100, original.content_hash, original.rows_root),
        "{retry:?}"
    );

    // Both pending; the curator approves the copy first. Scores were fixed at upload and
    // are on chain: the original stays the original.
    let copy_id = copier.contribute(d, &copy).await?;
    let original_id = author.contribute(d, &original).await?;
    owner.approve(copy_id).await?;
    owner.approve(original_id).await?;
    h.svc.sync().await?;
    let snap = h.svc.snapshot().await;
    let (c_copy, c_original) = (
        &snap.contributions[&copy_id.get()],
        &snap.contributions[&original_id.get()],
    );
    ensure!(c_original.quality_score == 100 && c_copy.quality_score == 25);
    ensure!(
        c_original.score_matches == Some(true) && c_copy.score_matches == Some(true),
        "{c_original:?} {c_copy:?}"
    );
    // A third near-copy, uploaded after both were approved, is a copy too.
    let late = h
        .client(3)
        .await?
        .upload_bytes(
            d,
            "late.txt",
            &[],
            near_copy().replace("indeed", "again").into_bytes(),
        )
        .await?;
    ensure!(late.score == 25, "{late:?}");
    h.devnet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_near_copies_uploaded_at_once_are_not_both_originals() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    let owner = h.client(0).await?;
    let d = owner
        .create_datanet("lighthouse notes", "", false, U256::ZERO)
        .await?;
    let (author, copier) = (h.client(1).await?, h.client(2).await?);
    let copy = near_copy().into_bytes();
    let (a, b) = tokio::join!(
        author.upload_bytes(d, "keeper.txt", &[], ORIGINAL.as_bytes().to_vec()),
        copier.upload_bytes(d, "keeper.txt", &[], copy),
    );
    let mut scores = [a?.score, b?.score];
    scores.sort();
    ensure!(
        scores == [25, 100],
        "one of two near-copies sent at once is the earlier upload: {scores:?}"
    );
    h.devnet.shutdown().await;
    Ok(())
}
