"""Opens siamlab shards with Hugging Face `datasets` and pyarrow/pandas (compatibility check).

    pip install datasets pyarrow pandas pillow
    python3 tools/hf_check.py SHARD_DIR train [test ...]
"""
import sys, glob
from datasets import load_dataset
d = sys.argv[1]
for split in sys.argv[2:]:
    ds = load_dataset("parquet", data_files=sorted(glob.glob(f"{d}/{split}/*.parquet")), split="train")
    print(split, ds.features)
    r = ds[1]
    print({k: (v if k != "image" else (v.size, v.mode, v.getpixel((7, 5)))) for k, v in r.items() if k != "attributes"}, "attrs:", r.get("attributes", [])[:5] if r.get("attributes") else None)
    if "label" in ds.features and hasattr(ds.features["label"], "int2str") and r["label"] is not None:
        print("label name:", ds.features["label"].int2str(r["label"]))
import pyarrow.parquet as pq, pandas
t = pq.read_table(sorted(glob.glob(f"{d}/{sys.argv[2]}/*.parquet"))[0])
print(t.schema)
print(t.to_pandas().head(2))
