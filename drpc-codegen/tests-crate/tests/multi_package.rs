//! Packages that import each other (`acme.types.v1` and `acme.store.v1`, plus `acme.admin`
//! using both), generated into the default module tree and included with one line: every
//! kind of cross-package reference resolves, and the generated client and server work over
//! real loopback TCP.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use drpc_codegen_tests::multi::acme::admin::admin_drpc::{self, Admin, AdminClient};
use drpc_codegen_tests::multi::acme::store::v1::{
    Item,
    store_drpc::{self, Store, StoreClient},
};
use drpc_codegen_tests::multi::acme::types::v1::{Id, Lookup};
use drpc_core::{Context, Error, Router, SendStream, Server, TransportConn};
use tokio::net::{TcpListener, TcpStream};

/// A store of items by id.
#[derive(Default)]
struct Items(Mutex<BTreeMap<String, Item>>);

impl Store for Items {
    async fn put(&self, _ctx: Context, item: Item) -> Result<Id, Error> {
        let id = item.id.clone().ok_or_else(|| Error::remote(3, "no id"))?;
        self.0.lock().unwrap().insert(id.value.clone(), item);
        Ok(id)
    }

    async fn get(&self, _ctx: Context, id: Id) -> Result<Lookup, Error> {
        let item = self.0.lock().unwrap().get(&id.value).cloned();
        Ok(Lookup {
            found: item.is_some(),
            item,
        })
    }

    async fn list(
        &self,
        _ctx: Context,
        _from: Id,
        mut stream: SendStream<Item>,
    ) -> Result<(), Error> {
        let items: Vec<Item> = self.0.lock().unwrap().values().cloned().collect();
        for item in &items {
            stream.send(item).await?;
        }
        Ok(())
    }
}

/// Admin with `Count` left to its default (the non-strict tree keeps the defaults).
struct HalfAdmin;

impl Admin for HalfAdmin {
    async fn remove(&self, _ctx: Context, item: Item) -> Result<Lookup, Error> {
        Ok(Lookup {
            item: Some(item),
            found: false,
        })
    }
}

fn item(id: &str, name: &str) -> Item {
    Item {
        id: Some(Id { value: id.into() }),
        name: name.into(),
    }
}

#[tokio::test]
async fn packages_that_import_each_other_work_end_to_end() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = store_drpc::register(Router::new(), Items::default());
    let server = Server::new(admin_drpc::register(router, HalfAdmin));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let conn = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        TransportConn::new(tcp)
    };

    let store = StoreClient::new(conn().await).with_timeout(Duration::from_secs(5));
    assert_eq!(store_drpc::rpc::GET, "/acme.store.v1.Store/Get");
    for (id, name) in [("b", "bolt"), ("a", "anvil")] {
        assert_eq!(store.put(&item(id, name)).await.unwrap().value, id);
    }
    let found = store.get(&Id { value: "a".into() }).await.unwrap();
    assert_eq!(
        found,
        Lookup {
            item: Some(item("a", "anvil")),
            found: true
        }
    );
    let missing = store.get(&Id { value: "zz".into() }).await.unwrap();
    assert_eq!(
        missing,
        Lookup {
            item: None,
            found: false
        }
    );

    let mut listed = store.list(&Id::default()).await.unwrap();
    let mut names = Vec::new();
    while let Some(i) = listed.recv().await.unwrap() {
        names.push(i.name);
    }
    assert_eq!(names, ["anvil", "bolt"]);

    let admin = AdminClient::new(conn().await).with_timeout(Duration::from_secs(5));
    let removed = admin.remove(&item("a", "anvil")).await.unwrap();
    assert_eq!(removed.item, Some(item("a", "anvil")));
    let e = admin.count(&Item::default()).await.unwrap_err();
    assert_eq!(e.code(), drpc_core::error::UNIMPLEMENTED, "{e:?}");
    server.shutdown(Duration::from_secs(1)).await;
}
