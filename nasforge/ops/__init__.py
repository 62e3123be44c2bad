"""nasforge.ops"""
