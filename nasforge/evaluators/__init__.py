"""nasforge.evaluators"""
