//! Terms acceptance is per user: a user who accepted the version in force on one device passes
//! the portal gate on every other device (once the site has the acceptance), the site records
//! which device it came from, and another user is still refused.

use std::time::Duration;

use mprelay::agent::AgentError;
use mprelay::policy::terms::publish;
use mprelay::store::TermsDraft;

use crate::compliance::wait_for_policy;
use crate::helpers::wait_until;

const WAIT: Duration = Duration::from_secs(10);

fn draft(body: &str) -> TermsDraft {
    TermsDraft {
        title: "Acceptable use".into(),
        body: body.into(),
        acceptance_statement: "I accept.".into(),
        summary: None,
        display_name: None,
        description: None,
    }
}

crate::both_backends!(a_user_who_accepted_on_one_device_is_let_through_on_another);
async fn a_user_who_accepted_on_one_device_is_let_through_on_another(db: crate::db::TestDb) {
    let sys = crate::compliance::system_on(Some(&db.url)).await;
    let p = publish(
        &sys.store,
        &mprelay::store::Actor::cli(),
        &draft("Be nice.\n"),
        false,
    )
    .await
    .unwrap();
    wait_for_policy(&sys, p.policy_version).await;
    let laptop = sys.agent("laptop").await;
    let desktop = sys.agent("desktop").await;
    assert!(matches!(
        desktop.portal_policy("alice").await,
        Err(AgentError::TermsNotAccepted { accepted: None, .. })
    ));

    let out = laptop.accept_terms("alice", Some(1), WAIT).await.unwrap();
    assert!(out.delivered);
    wait_until(Duration::from_secs(20), || async {
        desktop.portal_policy("alice").await.is_ok()
    })
    .await
    .expect("alice, who accepted on the laptop, is let through on the desktop");
    let status = desktop.terms_status("alice").await.unwrap();
    assert!(
        status.accepted.is_none(),
        "nothing was accepted on the desktop itself"
    );
    assert_eq!(status.accepted_version(), Some(1));
    match desktop.portal_policy("bob").await {
        Err(AgentError::TermsNotAccepted { accepted: None, .. }) => {}
        other => panic!("bob never accepted and must be refused: {other:?}"),
    }

    // The site records the device the acceptance came from.
    let r = sys.store.terms_acceptances().await.unwrap();
    let devices: Vec<_> = r
        .acceptances
        .iter()
        .map(|a| (a.user.as_str(), a.device_id.clone()))
        .collect();
    assert_eq!(devices, vec![("alice", laptop.device_id().hex())]);

    // A new version: the acceptance of version 1 no longer opens the portal anywhere.
    let p = publish(
        &sys.store,
        &mprelay::store::Actor::cli(),
        &draft("Be kind.\n"),
        true,
    )
    .await
    .unwrap();
    wait_for_policy(&sys, p.policy_version).await;
    for agent in [&laptop, &desktop] {
        match agent.portal_policy("alice").await {
            Err(AgentError::TermsNotAccepted {
                version: 2,
                accepted: Some(1),
                ..
            }) => {}
            other => panic!("version 2 is not accepted yet: {other:?}"),
        }
    }
}
