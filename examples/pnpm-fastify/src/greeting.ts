export const greeting = (manager: string): string => `hello from fastify, installed by ${manager}`;
