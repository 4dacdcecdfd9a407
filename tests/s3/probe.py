"""Probe an S3-compatible server for the behaviours vigil relies on.

Prints one line per check: what the server did (OK ... / ERR status code).
It is a record of behaviour, not a pass/fail test; tests/s3/README.md has
the results for moto, s3rver and (from source) s3s-fs.

    tests/s3/server.sh start /tmp/s3     # prints endpoint=... etc.
    "${VIGIL_S3_VENV:-target/s3venv}/bin/python" tests/s3/probe.py ENDPOINT KEY SECRET [create-bucket]

boto3 comes with moto, so the venv that server.sh makes has it.  Set
PROBE_SKIP_CRASH=1 to skip the check that crashes s3rver 3.7.1.
"""
import hashlib
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ep, key, secret = sys.argv[1:4]
create = len(sys.argv) > 4
cfg = Config(
    s3={"addressing_style": "path"},
    # Like opendal: no flexible checksums unless asked for.
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    retries={"max_attempts": 1},
)
s3 = boto3.client("s3", endpoint_url=ep, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name="us-east-1", config=cfg)
B = "vigil-test"
MiB = 1024 * 1024


def err(e):
    r = e.response
    return f"{r['ResponseMetadata'].get('HTTPStatusCode')} {r['Error'].get('Code')}"


def attempt(name, fn):
    try:
        out = fn()
        outcome = f"OK {out if out is not None else ''}".strip()
    except ClientError as e:
        outcome = f"ERR {err(e)}"
    except Exception as e:  # noqa: BLE001 - record whatever happened
        outcome = f"EXC {type(e).__name__}: {e}"[:200]
    print(f"{name:55s} {outcome}", flush=True)


def md5(b):
    return hashlib.md5(b).hexdigest()


def abort_quietly(k, u):
    try:
        s3.abort_multipart_upload(Bucket=B, Key=k, UploadId=u)
    except ClientError:
        pass


if create:
    attempt("create bucket", lambda: s3.create_bucket(Bucket=B)["ResponseMetadata"]["HTTPStatusCode"])

p1 = b"a" * (5 * MiB)
p2 = b"b" * 1000
expect_mp_etag = '"%s-2"' % hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest()


def put_etag():
    r = s3.put_object(Bucket=B, Key="single/obj", Body=b"hello world")
    return f"etag={r['ETag']} md5-match={r['ETag'].strip(chr(34)) == md5(b'hello world')}"


attempt("PutObject ETag == md5", put_etag)


def mp_ok():
    t = time.time()
    u = s3.create_multipart_upload(Bucket=B, Key="mp/ok")["UploadId"]
    e1 = s3.upload_part(Bucket=B, Key="mp/ok", UploadId=u, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=B, Key="mp/ok", UploadId=u, PartNumber=2, Body=p2)["ETag"]
    r = s3.complete_multipart_upload(Bucket=B, Key="mp/ok", UploadId=u, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    h = s3.head_object(Bucket=B, Key="mp/ok")
    body = s3.get_object(Bucket=B, Key="mp/ok")["Body"].read()
    return (f"part-etag-md5={e1.strip(chr(34)) == md5(p1)} complete-etag={r['ETag']} "
            f"expected={r['ETag'] == expect_mp_etag} head-etag-same={h['ETag'] == r['ETag']} "
            f"len={h['ContentLength']} body-ok={body == p1 + p2} {time.time() - t:.2f}s")


attempt("multipart 5MiB+1000B complete", mp_ok)


def mp_small():
    u = s3.create_multipart_upload(Bucket=B, Key="mp/small")["UploadId"]
    small = b"c" * MiB
    e1 = s3.upload_part(Bucket=B, Key="mp/small", UploadId=u, PartNumber=1, Body=small)["ETag"]
    e2 = s3.upload_part(Bucket=B, Key="mp/small", UploadId=u, PartNumber=2, Body=small)["ETag"]
    try:
        s3.complete_multipart_upload(Bucket=B, Key="mp/small", UploadId=u, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
        return "ACCEPTED (not enforced)"
    finally:
        abort_quietly("mp/small", u)


attempt("multipart 1MiB non-last part rejected?", mp_small)


def part_num(n):
    def f():
        u = s3.create_multipart_upload(Bucket=B, Key="mp/num")["UploadId"]
        try:
            s3.upload_part(Bucket=B, Key="mp/num", UploadId=u, PartNumber=n, Body=b"x")
            return "ACCEPTED"
        finally:
            abort_quietly("mp/num", u)
    return f


attempt("UploadPart PartNumber=10000", part_num(10000))
attempt("UploadPart PartNumber=10001 rejected?", part_num(10001))
attempt("UploadPart PartNumber=0 rejected?", part_num(0))


def mp_bad(kind):
    def f():
        u = s3.create_multipart_upload(Bucket=B, Key="mp/bad")["UploadId"]
        e1 = s3.upload_part(Bucket=B, Key="mp/bad", UploadId=u, PartNumber=1, Body=p1)["ETag"]
        e2 = s3.upload_part(Bucket=B, Key="mp/bad", UploadId=u, PartNumber=2, Body=p2)["ETag"]
        parts = [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]
        if kind == "etag":
            parts[1]["ETag"] = '"%s"' % ("0" * 32)
        elif kind == "order":
            parts.reverse()
        elif kind == "missing":
            parts.append({"PartNumber": 3, "ETag": e2})
        try:
            s3.complete_multipart_upload(Bucket=B, Key="mp/bad", UploadId=u, MultipartUpload={"Parts": parts})
            return "ACCEPTED"
        finally:
            abort_quietly("mp/bad", u)
    return f


attempt("Complete with wrong part ETag rejected?", mp_bad("etag"))
attempt("Complete with parts out of order rejected?", mp_bad("order"))
if not os.environ.get("PROBE_SKIP_CRASH"):
    attempt("Complete naming a part never uploaded rejected?", mp_bad("missing"))


def mp_list_abort():
    u = s3.create_multipart_upload(Bucket=B, Key="mp/abort")["UploadId"]
    s3.upload_part(Bucket=B, Key="mp/abort", UploadId=u, PartNumber=1, Body=b"zz")
    try:
        listed = any(x["UploadId"] == u for x in s3.list_multipart_uploads(Bucket=B).get("Uploads", []))
    except ClientError as e:
        listed = err(e)
    try:
        parts = len(s3.list_parts(Bucket=B, Key="mp/abort", UploadId=u).get("Parts", []))
    except ClientError as e:
        parts = err(e)
    try:
        s3.abort_multipart_upload(Bucket=B, Key="mp/abort", UploadId=u)
        ab = "ok"
    except ClientError as e:
        ab = err(e)
    try:
        gone = not any(x["UploadId"] == u for x in s3.list_multipart_uploads(Bucket=B).get("Uploads", []))
    except ClientError as e:
        gone = err(e)
    try:
        s3.upload_part(Bucket=B, Key="mp/abort", UploadId=u, PartNumber=2, Body=b"zz")
        after = "ACCEPTED"
    except ClientError as e:
        after = err(e)
    try:
        s3.head_object(Bucket=B, Key="mp/abort")
        obj = "EXISTS"
    except ClientError as e:
        obj = err(e)
    return (f"abort={ab} listed={listed} list-parts={parts} gone-after-abort={gone} "
            f"upload-after-abort={after} object={obj}")


attempt("ListMultipartUploads / ListParts / Abort", mp_list_abort)
attempt("Abort unknown UploadId",
        lambda: s3.abort_multipart_upload(Bucket=B, Key="mp/zzz", UploadId="does-not-exist") and None)


def put_inm_existing():
    s3.put_object(Bucket=B, Key="cond/new", Body=b"2", IfNoneMatch="*")
    body = s3.get_object(Bucket=B, Key="cond/new")["Body"].read()
    return f"ACCEPTED (body now {body!r})"


attempt("PutObject If-None-Match:* new key",
        lambda: s3.put_object(Bucket=B, Key="cond/new", Body=b"1", IfNoneMatch="*")["ResponseMetadata"]["HTTPStatusCode"])
attempt("PutObject If-None-Match:* existing key -> 412?", put_inm_existing)
attempt("PutObject If-Match:wrong -> 412?",
        lambda: (s3.put_object(Bucket=B, Key="cond/new", Body=b"3", IfMatch='"%s"' % ("0" * 32)), "ACCEPTED")[1])


def complete_inm(existing):
    def f():
        k = "cond/mp-existing" if existing else "cond/mp-new"
        if existing:
            s3.put_object(Bucket=B, Key=k, Body=b"old")
        u = s3.create_multipart_upload(Bucket=B, Key=k)["UploadId"]
        e1 = s3.upload_part(Bucket=B, Key=k, UploadId=u, PartNumber=1, Body=p2)["ETag"]
        try:
            r = s3.complete_multipart_upload(Bucket=B, Key=k, UploadId=u, IfNoneMatch="*",
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
            body = s3.get_object(Bucket=B, Key=k)["Body"].read()
            return f"{r['ResponseMetadata']['HTTPStatusCode']} body-len={len(body)}"
        finally:
            abort_quietly(k, u)
    return f


attempt("Complete If-None-Match:* new key", complete_inm(False))
attempt("Complete If-None-Match:* existing key -> 412?", complete_inm(True))

for k in ["list/a/1", "list/a/2", "list/b/1", "list/c", "list/d", "other/x"]:
    s3.put_object(Bucket=B, Key=k, Body=k.encode())


def lst_delim():
    r = s3.list_objects_v2(Bucket=B, Prefix="list/", Delimiter="/")
    return (f"keys={[o['Key'] for o in r.get('Contents', [])]} "
            f"prefixes={[p['Prefix'] for p in r.get('CommonPrefixes', [])]} KeyCount={r.get('KeyCount')}")


def lst_page():
    keys, tok, pages = [], None, 0
    while pages <= 10:
        kw = dict(Bucket=B, Prefix="list/", MaxKeys=2)
        if tok:
            kw["ContinuationToken"] = tok
        r = s3.list_objects_v2(**kw)
        pages += 1
        keys += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return f"pages={pages} keys={keys}"
        tok = r["NextContinuationToken"]
    return "LOOP"


def lst_v1():
    r = s3.list_objects(Bucket=B, Prefix="list/", Delimiter="/")
    return f"keys={[o['Key'] for o in r.get('Contents', [])]} prefixes={[p['Prefix'] for p in r.get('CommonPrefixes', [])]}"


attempt("ListObjectsV2 prefix=list/ delimiter=/", lst_delim)
attempt("ListObjectsV2 MaxKeys=2 pagination", lst_page)
attempt("ListObjectsV2 StartAfter=list/b/1",
        lambda: [o["Key"] for o in s3.list_objects_v2(Bucket=B, Prefix="list/", StartAfter="list/b/1").get("Contents", [])])
attempt("ListObjects (v1) prefix+delimiter", lst_v1)

attempt("HeadObject missing -> 404", lambda: s3.head_object(Bucket=B, Key="nope") and None)
attempt("GetObject missing -> NoSuchKey", lambda: s3.get_object(Bucket=B, Key="nope") and None)


def head_ok():
    h = s3.head_object(Bucket=B, Key="single/obj")
    return f"len={h['ContentLength']} etag={h['ETag']} lm={h['LastModified'].isoformat()}"


attempt("HeadObject", head_ok)


def rng(spec, key="single/obj"):
    def f():
        r = s3.get_object(Bucket=B, Key=key, Range=spec)
        return f"{r['ResponseMetadata']['HTTPStatusCode']} {r['Body'].read()!r} CR={r.get('ContentRange')}"
    return f


attempt("GET Range bytes=0-4", rng("bytes=0-4"))
attempt("GET Range bytes=6-", rng("bytes=6-"))
attempt("GET Range bytes=-5", rng("bytes=-5"))
attempt("GET Range bytes=100-200 -> 416?", rng("bytes=100-200"))
attempt("GET Range across part boundary", rng(f"bytes={5 * MiB - 2}-{5 * MiB + 1}", "mp/ok"))


def get_cond():
    et = s3.head_object(Bucket=B, Key="single/obj")["ETag"]
    out = []
    for label, kw in (("INM-match", {"IfNoneMatch": et}), ("IM-wrong", {"IfMatch": '"deadbeef"'})):
        try:
            s3.get_object(Bucket=B, Key="single/obj", **kw)
            out.append(f"{label} 200")
        except ClientError as e:
            out.append(f"{label} {err(e)}")
    return " ".join(out)


attempt("GET If-None-Match / If-Match", get_cond)


def del_one():
    s3.delete_object(Bucket=B, Key="list/c")
    r = s3.delete_object(Bucket=B, Key="never/existed")
    return f"missing-key-status={r['ResponseMetadata']['HTTPStatusCode']}"


def del_many():
    r = s3.delete_objects(Bucket=B, Delete={"Objects": [{"Key": "list/a/1"}, {"Key": "list/a/2"}, {"Key": "never/x"}]})
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=B, Prefix="list/").get("Contents", [])]
    return f"deleted={[d['Key'] for d in r.get('Deleted', [])]} errors={r.get('Errors')} left={left}"


def copy():
    s3.copy_object(Bucket=B, Key="copy/dst", CopySource={"Bucket": B, "Key": "single/obj"})
    return s3.get_object(Bucket=B, Key="copy/dst")["Body"].read()


attempt("DeleteObject (existing, missing)", del_one)
attempt("DeleteObjects (2 existing + 1 missing)", del_many)
attempt("CopyObject", copy)


def mp_big():
    t = time.time()
    k = "mp/big"
    u = s3.create_multipart_upload(Bucket=B, Key=k)["UploadId"]
    parts = []
    for i in range(1, 5):
        e = s3.upload_part(Bucket=B, Key=k, UploadId=u, PartNumber=i, Body=bytes([i]) * (8 * MiB))["ETag"]
        parts.append({"PartNumber": i, "ETag": e})
    s3.complete_multipart_upload(Bucket=B, Key=k, UploadId=u, MultipartUpload={"Parts": parts})
    n = len(s3.get_object(Bucket=B, Key=k)["Body"].read())
    return f"{n} bytes in {time.time() - t:.2f}s"


attempt("multipart 4x8MiB round trip", mp_big)
