"""Where a member comes from: reference → local file → validated header → vocabulary map → placement
→ loaded member (docs/design.md §1 and §8).

One path for every member, whatever names it; `load_members` (load.py) walks all of it and hands the
facade loaded members:

1. `parse_references(refs, rpc)` (placement.py over reference.py, the one grammar): each text or
   path becomes a `Reference` (a file, a Hugging Face file, an Ollama name, an LM Studio model) with
   the rpc-server it runs on, if any. Malformed names and endpoints, a member placed twice and a
   server shared by two members are refused here, before anything is read (InvalidParameterError).
2. `resolve_all(references)` (resolve.py): each reference becomes a local GGUF file through its
   store's resolver (ollama.py: manifest → blob; lmstudio.py: folder → file; huggingface.py: cache
   or hub, through fetch.py; a path is itself) and that file's header is checked by gguf_header with
   the vocabulary read, so llama.cpp never sees a file that is not a sound GGUF. The result is a
   `MemberSource` per member. Files are used where their store keeps them, never copied.
3. load.py: the vocabulary plan (vocabulary/bridge.py: which members follow the primary, their bridge
   tables read from or saved to the cache), each member's llama.cpp options (placement.py:
   `per_member_options`), the rpc-servers probed, and each member loaded (here or on its server),
   followers wrapped in the primary's token space.

A store or model that is not there is a `ModelNotFoundError` naming the reference (exit 1 on the
command line). `catalog.found_models` lists every GGUF in the stores from headers alone
(`edge-specens models list --all`).
"""

from .catalog import FoundModel, Store, found_models, stores
from .load import LoadedMembers, bridge_cache_dir, load_member, load_members
from .placement import parse_references, per_member_options
from .reference import HubFile, LMStudioName, OllamaName, Reference, hub_reference, parse_reference, split_placement
from .resolve import MemberSource, local_file, resolve, resolve_all

__all__ = [
    "FoundModel",
    "HubFile",
    "LMStudioName",
    "LoadedMembers",
    "MemberSource",
    "OllamaName",
    "Reference",
    "Store",
    "bridge_cache_dir",
    "found_models",
    "hub_reference",
    "load_member",
    "load_members",
    "local_file",
    "parse_reference",
    "parse_references",
    "per_member_options",
    "resolve",
    "resolve_all",
    "split_placement",
    "stores",
]
