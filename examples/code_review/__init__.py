"""The code-review agent: a model reviews a pull request, a person approves the merge."""
