"""Authoring the course: where its stages live, the generated skeletons and notebooks, a new
stage's scaffold, the student bundle, the Gradescope autograder zip, the corpus of proofs."""
