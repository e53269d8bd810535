"""`python -m mindprint.voice OUT.jsonl [N]`: a synthetic preference set in a voice (mindprint.synthetic.pairs), the
input of `make voice-demo` until the pipeline from a folder of writing takes this entry point over."""

from mindprint.synthetic.pairs import main

main()
