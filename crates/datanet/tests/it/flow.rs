//! The acceptance flow: public + permissioned Datanet, three contributors, approve/reject,
//! publish, on-chain root == recomputed, inclusion proofs, licence-gated reads, withdrawal.

use crate::common::{Harness, Moto, api_kind};
use alloy_primitives::U256;
use eyre::{Result, ensure};
use openledger_datanet::Status;
use openledger_datanet::validate::ValidationConfig;

fn files(tag: &str) -> [(String, Vec<u8>); 3] {
    [
        (
            format!("{tag}-bees.jsonl"),
            format!(
                "{{\"text\":\"{tag}: the hive queen lays brood in the comb while foragers bring nectar\"}}\n\
                 {{\"prompt\":\"What calms a hive?\",\"completion\":\"{tag}: a smoker puffs cool smoke over the frames\"}}\n\
                 {{\"messages\":[{{\"role\":\"user\",\"content\":\"Swarm season?\"}},{{\"role\":\"assistant\",\"content\":\"{tag}: late spring when the colony splits\"}}]}}\n"
            )
            .into_bytes(),
        ),
        (
            format!("{tag}-stars.md"),
            format!(
                "# {tag} observing log\n\nThe nebula glowed faintly through the eyepiece after midnight.\n\n\
                 Parallax of nearby stars shifts a little as the earth circles the sun each year.\n"
            )
            .into_bytes(),
        ),
        (
            format!("{tag}-bread.csv"),
            format!(
                "id,question,answer\n1,\"How wet is the dough?\",\"{tag}: hydration near 75 percent, with a long autolyse\"\n\
                 2,Why score the loaf?,\"{tag}: scoring lets the crust open, so the oven spring is even\"\n"
            )
            .into_bytes(),
        ),
    ]
}

/// Runs the whole flow on a harness; returns the number of contributions checked.
pub async fn run_flow(h: &Harness) -> Result<()> {
    let owner = h.client(0).await?;
    let cs = [h.client(1).await?, h.client(2).await?, h.client(3).await?];
    let outsider = h.client(4).await?;
    let fee = U256::from(10u64).pow(U256::from(15u64));
    let public = owner
        .create_datanet("public notes", "ipfs://none", false, U256::ZERO)
        .await?;
    let perm = owner.create_datanet("harbour logs", "", true, fee).await?;
    for c in &cs {
        owner.allow_contributor(perm, c.address()).await?;
    }
    // Not an allowed contributor of the permissioned Datanet: refused before anything is stored.
    let (status, kind, _) = api_kind(
        outsider
            .upload_bytes(perm, "x.txt", &[], b"outsider text".to_vec())
            .await,
    )?;
    ensure!(
        status == 403 && kind == "contributor_not_allowed",
        "{status} {kind}"
    );
    for (d, tag) in [(public, "pub"), (perm, "perm")] {
        let fs = files(tag);
        let mut ids = Vec::new();
        for (c, (name, bytes)) in cs.iter().zip(fs.iter()) {
            let columns = vec!["question".to_string(), "answer".to_string()];
            let r = c.upload_bytes(d, name, &columns, bytes.clone()).await?;
            ensure!(r.score == 100, "{name} scored {} {:?}", r.score, r.reasons);
            ensure!(r.row_count >= 2, "{name} has {} rows", r.row_count);
            ids.push(c.contribute(d, &r).await?);
        }
        owner.approve(ids[0]).await?;
        owner.approve(ids[1]).await?;
        owner.reject(ids[2], "off topic").await?;
        let (v0, root0, _) = owner.publish(d).await?;
        ensure!(v0 == 0);
        // A pending contribution that is withdrawn, and a new accepted one, then version 1.
        // Streamed from a file with a progress bar, as `openledger datanet contribute` does.
        let tmp = tempfile::tempdir()?;
        let late = tmp.path().join("late.txt");
        std::fs::write(
            &late,
            format!("{tag}: a late note about drone bees and varroa mites"),
        )?;
        let pb = openledger_datanet::client::progress_bar(std::fs::metadata(&late)?.len());
        let w = cs[0].upload_file(d, &late, &[], Some(pb.clone())).await?;
        ensure!(
            pb.position() == w.byte_size
                && w.content_hash == openledger_datanet::client::hash_file(&late).await?
        );
        let withdrawn = cs[0].contribute(d, &w).await?;
        cs[0].withdraw(withdrawn).await?;
        let again = cs[2]
            .upload_bytes(
                d,
                "again.txt",
                &[],
                format!(
                    "{tag}: levain ferments overnight before the dough is shaped in a banneton"
                )
                .into_bytes(),
            )
            .await?;
        let accepted_late = cs[2].contribute(d, &again).await?;
        owner.approve(accepted_late).await?;
        let (v1, root1, _) = owner.publish(d).await?;
        ensure!(v1 == 1 && root1 != root0);

        // Owner verifies both versions: on-chain root == recomputed, every proof checks.
        for (v, want) in [
            (0u64, vec![ids[0], ids[1]]),
            (1, vec![ids[0], ids[1], accepted_late]),
        ] {
            let rep = owner.verify(d, v).await?;
            ensure!(rep.ok(), "verify {d}/{v}: {rep:?}");
            ensure!(rep.onchain_root == rep.recomputed_root);
            let got: Vec<u64> = rep
                .manifest
                .contributions
                .iter()
                .map(|e| e.contribution_id)
                .collect();
            ensure!(got == want, "version {v} has {got:?}, want {want:?}");
            ensure!(!got.contains(&withdrawn.get()) && !got.contains(&ids[2].get()));
        }
        let show = owner.show(d).await?;
        let statuses: Vec<String> = show["contributions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        c["contribution"]["status"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ensure!(
            statuses == ["accepted", "accepted", "rejected", "withdrawn", "accepted"],
            "{statuses:?}"
        );
        let snap = h.svc.snapshot().await;
        ensure!(
            snap.contributions.get(&withdrawn.get()).map(|c| c.status) == Some(Status::Withdrawn)
        );
        ensure!(
            ids.iter()
                .all(|i| snap.contributions[&i.get()].score_matches == Some(true))
        );

        if d == public {
            // Public: anyone reads content and manifests.
            ensure!(outsider.download(d, ids[0]).await? == fs[0].1);
            ensure!(outsider.verify(d, 1).await?.ok());
        } else {
            // Permissioned: a non-licensee is refused, a contributor reads only its own item.
            let (status, kind, _) = api_kind(outsider.download(d, ids[0]).await)?;
            ensure!(status == 403 && kind == "not_licensed", "{status} {kind}");
            let (status, _, _) = api_kind(outsider.manifest(d, 1).await)?;
            ensure!(status == 403);
            ensure!(cs[1].download(d, ids[1]).await? == fs[1].1);
            let (status, _, _) = api_kind(cs[1].download(d, ids[0]).await)?;
            ensure!(status == 403);
            ensure!(owner.download(d, ids[0]).await? == fs[0].1);
            // After buying a licence (checked on chain), the outsider gets everything.
            outsider.buy_licence(d).await?;
            ensure!(outsider.download(d, ids[0]).await? == fs[0].1);
            ensure!(outsider.verify(d, 1).await?.ok());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_flow_local_store() -> Result<()> {
    let h = Harness::start(None, ValidationConfig::default()).await?;
    run_flow(&h).await?;
    ensure!(h.store.staged_count().await? == 0);
    h.devnet.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_flow_s3_store() -> Result<()> {
    let moto = Moto::start("datanets").await?;
    let store = moto.store("datanets", "it/flow")?;
    let h = Harness::start(Some(store.clone()), ValidationConfig::default()).await?;
    run_flow(&h).await?;
    ensure!(store.staged_count().await? == 0);
    // Everything is in the bucket: 2 × 5 contributions + 2 × 2 manifests.
    ensure!(
        store.list().await?.len() == 14,
        "{}",
        store.list().await?.len()
    );
    h.devnet.shutdown().await;
    Ok(())
}
