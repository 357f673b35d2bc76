//! A local S3 server for `bench/registry.sh`: s3s-fs (buckets are directories, objects are
//! files, request signatures checked) plus `ListMultipartUploads`, which s3s-fs lacks and
//! CNCF distribution's s3 driver calls to resume every upload. With it, both registries
//! run on the same S3 server in the benchmark. It listens where it is told (the benchmark
//! says 127.0.0.1) and keeps the open uploads in memory, which is enough for one run.
//!
//! ```sh
//! cargo build --release -p registry --example s3_server
//! target/release/examples/s3_server --host 127.0.0.1 --port 9000 \
//!     --access-key KEY --secret-key SECRET ROOT
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use s3s::dto::{ListMultipartUploadsInput, ListMultipartUploadsOutput, MultipartUpload, Timestamp};
use s3s::{S3Request, S3Response, S3Result, S3};

/// s3s-fs with a record of its open multipart uploads.
struct Server {
    fs: s3s_fs::FileSystem,
    /// (bucket, key, upload id) -> when it was created.
    uploads: Mutex<BTreeMap<(String, String, String), Timestamp>>,
}

impl Server {
    fn uploads(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String, String), Timestamp>> {
        // A poisoned lock only means a request panicked; the map itself is still whole.
        self.uploads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Passes each named S3 operation straight to s3s-fs. `#[async_trait]` does not see into
/// macros, so the methods are written in the form it would give them: a boxed future.
macro_rules! delegate {
    ($($name:ident: $input:ident -> $output:ident;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            req: S3Request<s3s::dto::$input>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = S3Result<S3Response<s3s::dto::$output>>> + Send + 'async_trait>,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            self.fs.$name(req)
        }
    )*};
}

#[async_trait::async_trait]
impl S3 for Server {
    delegate! {
        create_bucket: CreateBucketInput -> CreateBucketOutput;
        delete_bucket: DeleteBucketInput -> DeleteBucketOutput;
        head_bucket: HeadBucketInput -> HeadBucketOutput;
        list_buckets: ListBucketsInput -> ListBucketsOutput;
        get_bucket_location: GetBucketLocationInput -> GetBucketLocationOutput;
        get_object: GetObjectInput -> GetObjectOutput;
        head_object: HeadObjectInput -> HeadObjectOutput;
        put_object: PutObjectInput -> PutObjectOutput;
        copy_object: CopyObjectInput -> CopyObjectOutput;
        delete_object: DeleteObjectInput -> DeleteObjectOutput;
        delete_objects: DeleteObjectsInput -> DeleteObjectsOutput;
        list_objects: ListObjectsInput -> ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input -> ListObjectsV2Output;
        upload_part: UploadPartInput -> UploadPartOutput;
        upload_part_copy: UploadPartCopyInput -> UploadPartCopyOutput;
    }

    async fn list_parts(
        &self,
        req: S3Request<s3s::dto::ListPartsInput>,
    ) -> S3Result<S3Response<s3s::dto::ListPartsOutput>> {
        // s3s-fs lists parts in directory order and leaves IsTruncated out; distribution
        // dereferences IsTruncated and sums the parts in order.
        let mut resp = self.fs.list_parts(req).await?;
        if let Some(parts) = resp.output.parts.as_mut() {
            parts.sort_by_key(|p| p.part_number);
        }
        resp.output.is_truncated.get_or_insert(false);
        Ok(resp)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let resp = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &resp.output.upload_id {
            self.uploads().insert((bucket, key, id.clone()), Timestamp::from(std::time::SystemTime::now()));
        }
        Ok(resp)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::CompleteMultipartUploadOutput>> {
        let id = (req.input.bucket.clone(), req.input.key.clone(), req.input.upload_id.clone());
        let resp = self.fs.complete_multipart_upload(req).await?;
        self.uploads().remove(&id);
        Ok(resp)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<s3s::dto::AbortMultipartUploadOutput>> {
        let id = (req.input.bucket.clone(), req.input.key.clone(), req.input.upload_id.clone());
        let resp = self.fs.abort_multipart_upload(req).await?;
        self.uploads().remove(&id);
        Ok(resp)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let uploads: Vec<MultipartUpload> = self
            .uploads()
            .iter()
            .filter(|((bucket, key, _), _)| *bucket == input.bucket && key.starts_with(&prefix))
            .map(|((_, key, id), initiated)| MultipartUpload {
                key: Some(key.clone()),
                upload_id: Some(id.clone()),
                initiated: Some(initiated.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            max_uploads: Some(i32::try_from(uploads.len()).unwrap_or(i32::MAX).max(1000)),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// The command line: s3s-fs's own flags, so the benchmark can run either.
struct Args {
    host: String,
    port: u16,
    access_key: String,
    secret_key: String,
    root: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut host, mut port, mut access_key, mut secret_key, mut root) =
        ("127.0.0.1".to_owned(), 8014u16, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--host" => host = value()?,
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--access-key" => access_key = Some(value()?),
            "--secret-key" => secret_key = Some(value()?),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            dir => root = Some(PathBuf::from(dir)),
        }
    }
    Ok(Args {
        host,
        port,
        access_key: access_key.ok_or("--access-key is required")?,
        secret_key: secret_key.ok_or("--secret-key is required")?,
        root: root.ok_or("the root directory is required")?,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()
        .map_err(|e| format!("{e}\nusage: s3_server [--host H] [--port P] --access-key K --secret-key S ROOT"))?;
    let fs = s3s_fs::FileSystem::new(&args.root).map_err(|e| format!("open {}: {e:?}", args.root.display()))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(Server { fs, uploads: Mutex::default() });
    builder.set_auth(s3s::auth::SimpleAuth::from_single(args.access_key, args.secret_key));
    let service = builder.build();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        eprintln!("s3_server: listening on {}", listener.local_addr()?);
        let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let (socket, _) = listener.accept().await?;
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    eprintln!("s3_server: connection: {e}");
                }
            });
        }
    })
}
