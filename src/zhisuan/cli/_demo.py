"""``zhisuan serve --demo``: import and deploy the bundled models when the store is empty."""

from __future__ import annotations

import importlib.util
import logging

from zhisuan.settings import Settings
from zhisuan.store import Store

logger = logging.getLogger(__name__)

TINY_CHAT = "zhisuan-tiny-chat"
TINY_CHAT_GGUF = "zhisuan-tiny-chat-gguf"
MINILM = "minilm-embed"


def ensure_demo(store: Store, settings: Settings) -> list[str]:
    """Import (linked, not copied) and deploy the demo models if the store has no models.

    The GGUF export is deployed on llama.cpp only when ``llama-cpp-python`` is installed.

    Returns:
        The names deployed (empty when the store already had models).
    """
    from zhisuan import demo
    from zhisuan.modelstore import import_model

    if store.list_models():
        return []
    import_model(
        store, settings, demo.tiny_chat_dir(), name=TINY_CHAT, licence="commercial", link=True
    )
    store.put_deployment(TINY_CHAT, engine="transformers")
    deployed = [TINY_CHAT]
    import_model(
        store,
        settings,
        demo.minilm_dir(),
        name=MINILM,
        licence="commercial",
        task="embedding",
        link=True,
    )
    store.put_deployment(MINILM, engine="transformers")
    deployed.append(MINILM)
    gguf = demo.tiny_chat_gguf()
    if gguf.is_file():
        import_model(store, settings, gguf, name=TINY_CHAT_GGUF, licence="commercial", link=True)
        if importlib.util.find_spec("llama_cpp") is not None:
            store.put_deployment(TINY_CHAT_GGUF, engine="llamacpp")
            deployed.append(TINY_CHAT_GGUF)
        else:
            logger.warning(
                "llama-cpp-python is not installed: %s imported, not deployed", TINY_CHAT_GGUF
            )
    logger.info("demo models deployed: %s", ", ".join(deployed))
    return deployed
