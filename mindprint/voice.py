"""`python -m mindprint.voice OUT.jsonl [N]`: a synthetic preference set in a voice (mindprint.synthetic.pairs)."""

from mindprint.synthetic.pairs import main

if __name__ == "__main__":
    main()
