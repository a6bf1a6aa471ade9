#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the fixtures in ../shared (run once; the seeds are checked in).

Real files are shrunk so that each seed stays small: pickles are taken out of the fixture
checkpoints and given tiny storages, safetensors headers keep a few tensors, texts are cut.
tools/fuzz.sh adds further small fixture files (configs, indexes, checksum lists) at run time.
"""
import io
import json
import os
import pickle
import struct
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("METHARME_SHARED", os.path.join(ROOT, "..", "shared"))
FIX = os.path.join(SHARED, "fixtures")
OUT = os.path.join(ROOT, "fuzz", "seeds")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def shrink_safetensors(path, keep=6):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None)
    out = []
    size = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I32": 4, "I64": 8, "I16": 2, "U8": 1, "I8": 1, "BOOL": 1}
    for name, e in list(header.items())[:keep]:
        shape = [min(d, 3) for d in e["shape"]]
        numel = 1
        for d in shape:
            numel *= d
        out.append((name, e["dtype"], shape, b"\x01" * (numel * size[e["dtype"]])))
    return safetensors(out, meta)


def zip_bytes(items, compression=zipfile.ZIP_STORED, zip64=False):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in items:
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data)
    return buf.getvalue()


def main():
    # safetensors: the fixtures' headers with a few tensors of tiny shapes, and hand-made ones.
    n = 0
    for d in [os.path.join(ROOT, "models", "stories260k")] + [os.path.join(FIX, "models", m) for m in os.listdir(os.path.join(FIX, "models"))] + [os.path.join(FIX, "gptq", g) for g in os.listdir(os.path.join(FIX, "gptq"))]:
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if f.endswith(".safetensors"):
                put("safetensors_fuzz", f"fixture{n}.safetensors", shrink_safetensors(os.path.join(d, f)))
                n += 1
    put("safetensors_fuzz", "dtypes.safetensors", safetensors(
        [("a", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)), ("b", "F16", [3], b"\x00\x3c" * 3),
         ("c", "BF16", [1, 2], b"\x80\x3f" * 2), ("d", "F64", [1], struct.pack("<d", 0.5)),
         ("e", "I32", [0, 7], b""), ("f", "U8", [5], b"abcde")], {"format": "pt"}))
    # safetensors index beside the harness's shard a.safetensors (tensors x, y).
    put("safetensors_index_fuzz", "index.json", json.dumps(
        {"metadata": {"total_size": 20}, "weight_map": {"x": "a.safetensors", "y": "a.safetensors"}}))

    # torch: the fixture pickles with their storages cut to the declared sizes of small tensors.
    pickles = []
    for sub in ["stories260k-zip", "stories260k-sharded", "gptq-4bit-actorder-g32-pt"]:
        d = os.path.join(FIX, "torch", sub)
        for f in sorted(os.listdir(d)):
            if f.endswith((".bin", ".pt")):
                with zipfile.ZipFile(os.path.join(d, f)) as z:
                    pkl = [i for i in z.namelist() if i.endswith("data.pkl")][0]
                    pickles.append((sub + "-" + f, z.read(pkl)))
    for name, pkl in pickles:
        put("unpickler_fuzz", name + ".pkl", pkl)
    with open(os.path.join(FIX, "torch", "stories260k-legacy", "pytorch_model.bin"), "rb") as f:
        head = f.read(8192)
    put("unpickler_fuzz", "legacy-head.bin", head)
    with open(os.path.join(FIX, "torch", "malicious", "pytorch_model.bin"), "rb") as f:
        data = f.read()
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pkl = [i for i in z.namelist() if i.endswith("data.pkl")][0]
            put("unpickler_fuzz", "malicious.pkl", z.read(pkl))
    else:
        put("unpickler_fuzz", "malicious-head.bin", data[:4096])

    # Small torch files: a state dict written opcode by opcode as torch.save does (protocol 2,
    # storages as persistent ids), with its storages, as stored, deflated and ZIP64 zips.
    def state_dict(tensors, legacy=False):
        """tensors: [(name, storage type, key, storage numel, offset, shape, stride)]"""
        def s(v):
            return b"X" + struct.pack("<I", len(v)) + v.encode()

        def i(v):
            return b"K" + bytes([v]) if v < 256 else b"J" + struct.pack("<i", v)
        glob = lambda m, n: b"c" + m.encode() + b"\n" + n.encode() + b"\n"
        out = b"\x80\x02" + glob("collections", "OrderedDict") + b")R("
        for name, typ, key, numel, off, shape, stride in tensors:
            out += s(name) + glob("torch._utils", "_rebuild_tensor_v2") + b"("
            out += b"(" + s("storage") + glob("torch", typ) + s(key) + s("cpu") + i(numel) + (b"N" if legacy else b"")
            out += b"tQ" + i(off) + b"(" + b"".join(i(d) for d in shape) + b"t(" + b"".join(i(d) for d in stride)
            out += b"t\x89" + glob("collections", "OrderedDict") + b")RtR"
        return out + b"u."
    tensors = [("w", "FloatStorage", "0", 6, 0, [2, 3], [3, 1]), ("wt", "FloatStorage", "0", 6, 0, [3, 2], [1, 3]),
               ("h", "HalfStorage", "1", 4, 1, [3], [1]), ("e", "LongStorage", "2", 0, 0, [0, 4], [4, 1])]
    storages = [("0", struct.pack("<6f", 1, 2, 3, 4, 5, 6)), ("1", b"\x00\x3c" * 4), ("2", b"")]
    pkl = state_dict(tensors)
    put("unpickler_fuzz", "state_dict.pkl", pkl)
    items = [("archive/data.pkl", pkl), ("archive/byteorder", b"little")] + \
        [("archive/data/" + k, v) for k, v in storages] + [("archive/version", b"3\n")]
    put("torch_fuzz", "tiny-stored.pt", zip_bytes(items))
    put("torch_fuzz", "tiny-deflate.pt", zip_bytes(items, zipfile.ZIP_DEFLATED))
    put("torch_fuzz", "tiny-zip64.pt", zip_bytes(items, zip64=True))
    put("zip_fuzz", "tiny-torch.zip", zip_bytes(items))
    # The legacy layout: magic, protocol, sys info, the state dict, the key list, the storages.
    magic = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."
    legacy = magic + b"\x80\x02M\xe9\x03." + b"\x80\x02}(X\x0d\x00\x00\x00little_endian\x88u."
    legacy += state_dict(tensors, legacy=True) + b"\x80\x02](" + b"".join(
        b"X" + struct.pack("<I", len(k)) + k.encode() for k, _ in storages) + b"e."
    for k, v in storages:
        numel = {"0": 6, "1": 4, "2": 0}[k]
        legacy += struct.pack("<q", numel) + v
    put("torch_fuzz", "tiny-legacy.pt", legacy)

    small = min(pickles, key=lambda p: len(p[1]))
    items = [("archive/data.pkl", small[1]), ("archive/version", b"3\n"), ("archive/byteorder", b"little")]
    put("torch_fuzz", "pickle-only-stored.pt", zip_bytes(items))
    put("torch_fuzz", "pickle-only-deflate.pt", zip_bytes(items, zipfile.ZIP_DEFLATED))
    put("torch_fuzz", "pickle-only-zip64.pt", zip_bytes(items, zip64=True))
    put("torch_fuzz", "legacy-head.pt", head)
    put("zip_fuzz", "stored.zip", zip_bytes([("a/data.pkl", b"\x80\x02}q\x00."), ("a/data/0", b"\x00" * 16)]))
    put("zip_fuzz", "deflate.zip", zip_bytes([("a/data.pkl", b"\x80\x02}q\x00." * 4), ("b", b"xyz" * 20)], zipfile.ZIP_DEFLATED))
    put("zip_fuzz", "zip64.zip", zip_bytes([("a/data.pkl", b"\x80\x02}q\x00."), ("a/version", b"3\n")], zip64=True))

    # npy: small arrays of every dtype the reader knows.
    def npy(descr, shape, raw):
        h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
        h += " " * (-(10 + len(h) + 1) % 64) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + raw
    for descr, size in [("<f4", 4), ("<f2", 2), ("<f8", 8), ("<i4", 4), ("<i8", 8), ("<i2", 2), ("|u1", 1), ("|i1", 1)]:
        put("npy_fuzz", descr.strip("<|") + ".npy", npy(descr, "(2, 3)", b"\x01" * (6 * size)))
    put("npy_fuzz", "scalar.npy", npy("<f4", "()", b"\x00\x00\x80\x3f"))

    # checksum lists: GNU and BSD formats.
    put("checksums_fuzz", "bsd.txt", "MD5 (config.json) = 0ba918a1ec3a2aa629178b581a9657a0\n"
        "SHA256 (tokenizer.model) = " + "ab" * 32 + "\n")
    put("checksums_fuzz", "gnu.txt", "0ba918a1ec3a2aa629178b581a9657a0 *config.json\n# comment\n\n")

    # tokenizer: texts of the golden tokenization fixture.
    with open(os.path.join(FIX, "tokenizer", "llama", "golden_tokenization.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(l) for l in f if l.strip()]
    for r in rows[:: max(1, len(rows) // 24)]:
        put("tokenizer_fuzz", "text%d.txt" % r["index"], r["text"][:512])
    put("tokenizer_fuzz", "invalid-utf8.txt", b"Once \xff\xfe upon \xe2\x82 a time\xc3")

    # conversations.
    put("conversation_fuzz", "chat.json", json.dumps({"format": "metharme-chat", "version": 1, "system": "Be kind.",
        "memory": "Lily likes cats.", "messages": [{"role": "user", "text": "Hi"}, {"role": "model", "text": "Hello!"}]}))
    put("conversation_fuzz", "minimal.json", '{"messages": []}')

    # request bodies.
    put("kobold_params_fuzz", "lite.json", json.dumps({"n": 1, "max_context_length": 2048, "max_length": 80,
        "rep_pen": 1.07, "temperature": 0.7, "top_p": 0.92, "top_k": 100, "top_a": 0, "typical": 1, "tfs": 1,
        "rep_pen_range": 360, "rep_pen_slope": 0.7, "sampler_order": [6, 0, 1, 3, 4, 2, 5], "memory": "Lily.\n",
        "genkey": "KCPP1234", "min_p": 0, "dynatemp_range": 0, "dynatemp_exponent": 1, "smoothing_factor": 0,
        "banned_tokens": ["dragon"], "render_special": False, "presence_penalty": 0, "logit_bias": {"5": -1},
        "prompt": "Once upon a time", "quiet": True, "stop_sequence": ["\nYou:"], "use_default_badwordsids": False,
        "bypass_eos": False}))
    put("kobold_params_fuzz", "united.json", json.dumps({"prompt": "Hello", "max_length": 8, "singleline": True,
        "frmttriminc": True, "disable_output_formatting": False, "sampler_seed": 7, "n": 2}))
    put("kobold_params_fuzz", "minimal.json", '{"prompt": "Hi"}')
    put("openai_params_fuzz", "completion.json", "\x00" + json.dumps({"model": "x", "prompt": "Once upon", "max_tokens": 16,
        "temperature": 0.5, "top_p": 0.9, "stop": ["\n"], "n": 2, "seed": 3, "echo": True, "logit_bias": {"13": 2}}))
    put("openai_params_fuzz", "ids.json", "\x00" + json.dumps({"prompt": [1, 403, 407], "stream": True,
        "stream_options": {"include_usage": True}}))
    put("openai_params_fuzz", "chat.json", "\x01" + json.dumps({"model": "x", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello"}], "max_completion_tokens": 20, "frequency_penalty": 0.5}))
    # config.json: the fixtures' come from tools/fuzz.sh; one with every optional field here.
    put("config_fuzz", "full.json", json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "intermediate_size": 172, "num_attention_heads": 8, "num_key_value_heads": 4, "num_hidden_layers": 5,
        "vocab_size": 512, "max_position_embeddings": 512, "head_dim": 8, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": [2, 3],
        "torch_dtype": "float16", "rope_scaling": None, "quantization_config": {"bits": 4}}))
    # GGUF: a tiny llama file with every metadata value type, a 4-token vocabulary and one tensor
    # of each of a few ggml types (Q4_0, Q4_K, F16, F32).
    put("gguf_fuzz", "tiny.gguf", gguf_tiny())
    return 0


def gguf_tiny():
    def s(v):
        b = v.encode()
        return struct.pack("<Q", len(b)) + b
    kv = [
        (s("general.architecture") + struct.pack("<I", 8) + s("llama")),
        (s("llama.embedding_length") + struct.pack("<II", 4, 256)),
        (s("llama.feed_forward_length") + struct.pack("<II", 4, 256)),
        (s("llama.block_count") + struct.pack("<II", 4, 1)),
        (s("llama.attention.head_count") + struct.pack("<II", 4, 4)),
        (s("llama.attention.layer_norm_rms_epsilon") + struct.pack("<If", 6, 1e-5)),
        (s("llama.rope.freq_base") + struct.pack("<Id", 12, 10000.0)),
        (s("t.i8") + struct.pack("<Ib", 1, -3)), (s("t.u16") + struct.pack("<IH", 2, 7)),
        (s("t.i16") + struct.pack("<Ih", 3, -7)), (s("t.u64") + struct.pack("<IQ", 10, 9)),
        (s("t.i64") + struct.pack("<Iq", 11, -9)), (s("t.u8") + struct.pack("<IB", 0, 9)),
        (s("tokenizer.ggml.model") + struct.pack("<I", 8) + s("llama")),
        (s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 4) + s("<unk>") + s("<s>") + s("</s>") + s("\u2581a")),
        (s("tokenizer.ggml.scores") + struct.pack("<IIQ4f", 9, 6, 4, 0, 0, 0, -1)),
        (s("tokenizer.ggml.token_type") + struct.pack("<IIQ4i", 9, 5, 4, 2, 3, 3, 1)),
        (s("tokenizer.ggml.add_bos_token") + struct.pack("<IB", 7, 1)),
    ]
    tensors = [("a.q4_0", 2, [32, 2], 36), ("b.q4_k", 12, [256], 144), ("c.f16", 1, [4, 2], 16), ("d.f32", 0, [3], 12)]
    infos, data = b"", b""
    for name, ty, dims, nbytes in tensors:
        data += b"\0" * (-len(data) % 32)
        infos += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ty, len(data))
        data += bytes((i * 37 + 11) % 251 for i in range(nbytes))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + infos
    return head + b"\0" * (-len(head) % 32) + data


if __name__ == "__main__":
    sys.exit(main())
